"""Resuming (``training.resume``): a run continued after an epoch, after a SIGKILL, on another device, ends with the
bits of an uninterrupted one; a checkpoint of other settings, or of nothing, is refused in one line."""

import signal
import subprocess
import time

import pytest
import torch
from helpers import PYTHON, history_without_times, python_env, saved_weights, train_config
from ignite.engine import Events

from ignite_lenet.config import TrainConfig
from ignite_lenet.files import read_json
from ignite_lenet.model import LeNet5
from ignite_lenet.spec import BEST_MODEL, HISTORY, TRAINING_CHECKPOINT
from ignite_lenet.train import main
from ignite_lenet.training.job import build_training, train
from ignite_lenet.training.resume import check_resumable, initial_weights, restore
from ignite_lenet.training.wiring import RESUME_KEYS


def test_resume_after_an_epoch_ends_exactly_like_an_uninterrupted_run(mnist_dir, tmp_path, short_run):
    out, _ = short_run
    train(train_config(mnist_dir, tmp_path, epochs=2, epoch_length=300))
    result = train(train_config(mnist_dir, tmp_path, epochs=3, epoch_length=300, resume=True)).metrics
    assert result["epochs_run"] == 3
    assert history_without_times(tmp_path) == history_without_times(out)
    final, reference = (saved_weights(d / TRAINING_CHECKPOINT) for d in (tmp_path, out))
    for name in reference:
        assert torch.equal(final[name], reference[name]), name
    trainer_state = torch.load(tmp_path / TRAINING_CHECKPOINT, weights_only=True)["trainer"]
    assert trainer_state["iteration"] == 900 and trainer_state["epoch_length"] == 300



def test_a_killed_run_resumes_from_its_last_checkpoint_to_the_samesaved_weights(mnist_dir, tmp_path, short_run):
    out, _ = short_run
    args = ["-m", "ignite_lenet.train", "--data-dir", str(mnist_dir), "--no-download", "--device", "cpu",
            "--output-dir", str(tmp_path),
            "--epochs", "3", "--epoch-length", "300", "--no-progress"]
    process = subprocess.Popen([PYTHON, *args], env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    checkpoint = tmp_path / TRAINING_CHECKPOINT
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no chance to clean up: whatever is on disk must be usable
    process.wait()
    saved_iteration = torch.load(checkpoint, weights_only=True)["trainer"]["iteration"]
    assert saved_iteration in (300, 600, 900)
    assert main([*args[2:], "--resume"]) == 0
    final, reference = (saved_weights(d / TRAINING_CHECKPOINT) for d in (tmp_path, out))
    for name in reference:
        assert torch.equal(final[name], reference[name]), name



def test_resume_when_already_complete_only_evaluates(mnist_dir, short_run, tmp_path):
    out, result = short_run
    import shutil

    shutil.copytree(out, tmp_path / "run")
    again = train(train_config(mnist_dir, tmp_path / "run", epochs=3, epoch_length=300, resume=True)).metrics
    assert again["test_accuracy"] == result["test_accuracy"] and again["epochs_run"] == 3



def test_resume_refuses_other_settings_or_a_missing_checkpoint(mnist_dir, short_run, tmp_path):
    out, _ = short_run
    with pytest.raises(ValueError, match="--batch-size"):
        train(train_config(mnist_dir, out, epochs=4, epoch_length=300, batch_size=64, resume=True))
    with pytest.raises(FileNotFoundError, match="resume"):
        train(train_config(mnist_dir, tmp_path, resume=True))



def test_augmented_one_cycle_run_is_reproducible_and_resumes_exactly_after_a_kill(mnist_dir, tmp_path):
    flags = ["--epochs", "3", "--epoch-length", "50", "--augment", "--schedule", "onecycle", "--lr", "3e-3"]
    reference = tmp_path / "reference"
    assert main(["--data-dir", str(mnist_dir), "--no-download", "--device", "cpu", "--output-dir", str(reference),
                 "--no-progress", *flags]) == 0
    lrs = read_json(reference / HISTORY)["lr"]
    assert lrs[0] > lrs[1] > lrs[2] and lrs[2] < 1e-6  # past the warm-up, annealing to ~0 at the last step
    with pytest.raises(ValueError, match="--epochs"):  # a one-cycle schedule cannot be stretched on resume
        train(train_config(mnist_dir, reference, epochs=4, epoch_length=50, augment=True, schedule="onecycle", lr=3e-3,
                 resume=True))

    interrupted = tmp_path / "interrupted"
    args = ["-m", "ignite_lenet.train", "--data-dir", str(mnist_dir), "--no-download", "--device", "cpu",
            "--output-dir", str(interrupted),
            "--no-progress", *flags]
    process = subprocess.Popen([PYTHON, *args], env=python_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint = interrupted / TRAINING_CHECKPOINT
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert main([*args[2:], "--resume"]) == 0
    assert history_without_times(interrupted) == history_without_times(reference)
    final, expected = (saved_weights(d / TRAINING_CHECKPOINT) for d in (interrupted, reference))
    for name in expected:
        assert torch.equal(final[name], expected[name]), name



@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_deterministic_cuda_run_resumes_bit_for_bit(mnist_dir, tmp_path):
    """Graph replays that read the one-cycle lr and beta1 from device tensors, augmentation drawn on the GPU: a run
    stopped after its first epoch and resumed (warm-up steps, then a new capture) ends with the same bits."""
    flags = dict(device="cuda", deterministic=True, epochs=2, epoch_length=40, batch_size=64, augment=True,
                 elastic=True, schedule="onecycle", lr=3e-3)
    reference = train(train_config(mnist_dir, tmp_path / "reference", **flags))
    assert reference.metrics["device"].startswith("cuda")
    best = torch.load(tmp_path / "reference" / BEST_MODEL, weights_only=True)  # no map_location: CPU tensors
    assert {tensor.device.type for tensor in best["model"].values()} == {"cpu"}
    interrupted = train_config(mnist_dir, tmp_path / "interrupted", **flags)
    training = build_training(interrupted)
    assert training.engines.readout.step.use_graph  # OneCycleLR no longer means eager on CUDA
    training.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())
    with training.determinism:
        training.trainer.run(training.loaders["train"], max_epochs=2)  # stops after epoch 1 (checkpoint written)
    training.close()  # its trainer was run directly, not through run(): give the run directory up to the resume
    finished = train(interrupted.replace(resume=True))
    assert history_without_times(tmp_path / "interrupted") == history_without_times(tmp_path / "reference")
    final, expected = (saved_weights(tmp_path / d / TRAINING_CHECKPOINT) for d in ("interrupted", "reference"))
    for name in expected:
        assert torch.equal(final[name], expected[name]), name
    assert finished.metrics["test_accuracy"] == reference.metrics["test_accuracy"]



@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_one_cycle_run_moves_between_cpu_and_a_graphed_cuda_step_on_resume(mnist_dir, tmp_path):
    """The checkpoint's optimizer state, not its implementation: fused on CPU, single-tensor capturable on CUDA."""
    cfg = train_config(mnist_dir, tmp_path, epochs=3, epoch_length=20, batch_size=64, schedule="onecycle", lr=3e-3,
               augment=True)

    def run_until(cfg, epoch):
        training = build_training(cfg)
        training.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=epoch), lambda engine: engine.terminate())
        training.trainer.run(training.loaders["train"], max_epochs=cfg.epochs)
        training.close()  # run directly, not through run(): the next leg resumes the same run directory
        return training

    run_until(cfg, 1)
    on_cuda = run_until(cfg.replace(device="cuda", resume=True), 2)
    assert on_cuda.engines.readout.step.graphed and on_cuda.trainer.state.epoch == 2
    finished = train(cfg.replace(resume=True))  # back on the CPU for the last epoch
    assert finished.metrics["epochs_run"] == 3 and finished.metrics["device"] == "cpu"
    assert finished.metrics["test_accuracy"] > 0.6  # 60 augmented steps: about 82% on CPU



def _checkpoint(short_run):
    out, _ = short_run
    path = out / TRAINING_CHECKPOINT
    return path, torch.load(path, weights_only=True)


def test_a_checkpoint_of_another_trajectory_is_refused_naming_the_flag(short_run):
    path, checkpoint = _checkpoint(short_run)
    cfg = TrainConfig.from_dict(checkpoint["config"])
    check_resumable(cfg.replace(epochs=10, resume=True, progress=True), checkpoint, path)  # more epochs, same path
    for changes, flag in (({"batch_size": 64}, "--batch-size 32, not 64"), ({"lr": 2e-3}, "--lr 0.001, not 0.002"),
                          ({"seed": 1}, "--seed 0, not 1"), ({"augment": True}, "--augment False, not True")):
        with pytest.raises(ValueError, match=f"^--resume: {path} was trained with {flag}; resume with the same"):
            check_resumable(cfg.replace(**changes), checkpoint, path)
    one_cycle = {**checkpoint, "config": {**checkpoint["config"], "schedule": "onecycle"}}
    check_resumable(cfg.replace(schedule="onecycle"), one_cycle, path)
    with pytest.raises(ValueError, match="--epochs 3, not 4"):  # a one-cycle schedule spans the whole run
        check_resumable(cfg.replace(schedule="onecycle", epochs=4), one_cycle, path)


def test_a_checkpoint_without_a_settings_newer_field_is_read_as_its_old_value(short_run):
    path, checkpoint = _checkpoint(short_run)
    cfg = TrainConfig.from_dict(checkpoint["config"])
    older = {**checkpoint, "config": {k: v for k, v in checkpoint["config"].items() if k != "fast_tanh"}}
    check_resumable(cfg, older, path)  # trained before --fast-tanh existed: it was off
    with pytest.raises(ValueError, match="--fast-tanh False, not True"):
        check_resumable(cfg.replace(fast_tanh=True), older, path)


@pytest.mark.parametrize("spoil, what", [
    (lambda c: c.pop("trainer"), "missing trainer"),
    (lambda c: c.pop(RESUME_KEYS[-1]), f"missing {RESUME_KEYS[-1]}"),
    (lambda c: c.__setitem__("config", [1, 2]), "its 'config' is not a dictionary"),
])
def test_what_is_not_a_training_checkpoint_is_refused_in_one_line(short_run, spoil, what):
    path, checkpoint = _checkpoint(short_run)
    spoil(checkpoint)
    with pytest.raises(ValueError, match=f"is not a training checkpoint of this package \\({what}\\)"):
        check_resumable(TrainConfig.from_dict(read_json(path.parent / "config.json")), checkpoint, path)


def test_a_checkpoint_that_does_not_fit_the_model_is_one_line_and_a_fitting_one_restores_it(short_run):
    path, checkpoint = _checkpoint(short_run)
    wide = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match=f"^--resume: {path} does not fit this run \\(") as refused:
        restore({"model": wide}, checkpoint, path)
    assert "\n" not in str(refused.value)
    model = LeNet5()
    restore({"model": model}, checkpoint, path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint["model"][name]), name


def test_init_from_names_its_flag_and_takes_a_run_directorys_best_weights(short_run, tmp_path):
    out, _ = short_run
    model = initial_weights(str(out))
    assert isinstance(model, LeNet5)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved_weights(out / BEST_MODEL)[name]), name
    with pytest.raises(FileNotFoundError, match="^--init-from: "):
        initial_weights(str(tmp_path / "nowhere.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="^--init-from: "):
        initial_weights(str(tmp_path / "junk.pt"))
