"""End-to-end training on real MNIST, in process: artifacts, model selection, schedule, determinism, resume."""

import json
import signal
import subprocess
import time

import pytest
import torch
from helpers import PYTHON, python_env
from ignite.engine import Events
from PIL import Image

from ignite_lenet import checkpoints
from ignite_lenet.config import TrainConfig
from ignite_lenet.files import read_json
from ignite_lenet.spec import (
    BEST_MODEL,
    BEST_MODEL_KEYS,
    CONFIG,
    CONFUSION_MATRIX,
    CURVES,
    HISTORY,
    METRICS,
    TRAINING_CHECKPOINT,
)
from ignite_lenet.train import main, run
from ignite_lenet.training.data import InMemoryLoader
from ignite_lenet.training.engines import create_evaluator
from ignite_lenet.training.run import TrainingDiverged, build_training, train


def _cfg(mnist_dir, out, **kw):
    # bit-exact comparisons below: pinned to the CPU, whatever --device auto would pick
    base = dict(data_dir=str(mnist_dir), download=False, output_dir=str(out), progress=False, device="cpu")
    return TrainConfig(**{**base, **kw})


def _metrics_without_times(run_dir):
    history = read_json(run_dir / HISTORY)
    history.pop("epoch_time_s")
    return history


def _weights(path, key="model"):
    return torch.load(path, weights_only=True)[key]


@pytest.fixture(scope="module")
def short_run(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("short")
    result = run(_cfg(mnist_dir, out, epochs=3, epoch_length=300))
    return out, result


def test_short_run_learns_and_writes_every_artifact(short_run):
    out, result = short_run
    assert result["best_val_accuracy"] > 0.90 and result["test_accuracy"] > 0.90
    for name in (BEST_MODEL, TRAINING_CHECKPOINT, HISTORY, CURVES,
                 METRICS, CONFIG, CONFUSION_MATRIX):
        assert (out / name).is_file(), name
    history = read_json(out / HISTORY)
    assert set(history) == {"train", "val", "lr", "epoch_time_s"}
    assert all(len(history[s][k]) == 3 for s in ("train", "val") for k in ("loss", "accuracy"))
    assert len(history["lr"]) == len(history["epoch_time_s"]) == 3
    assert json.loads((out / METRICS).read_text()) == pytest.approx(result)
    assert read_json(out / CONFIG)["epoch_length"] == 300
    for png in (CURVES, CONFUSION_MATRIX):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.width >= 600


def test_best_checkpoint_is_the_epoch_of_lowest_validation_loss(short_run, mnist_data):
    out, result = short_run
    checkpoint = torch.load(out / BEST_MODEL, weights_only=True)
    assert set(checkpoint) == set(BEST_MODEL_KEYS)
    val_losses = read_json(out / HISTORY)["val"]["loss"]
    assert checkpoint["epoch"] == 1 + min(range(3), key=val_losses.__getitem__) == result["best_epoch"]
    assert checkpoint["val_loss"] == pytest.approx(min(val_losses))
    # the stored weights really are that epoch's: they reproduce its validation metrics
    model, _ = checkpoints.load_best_model(out / BEST_MODEL)
    metrics = create_evaluator(model).run(InMemoryLoader(mnist_data.val, 1000)).metrics
    assert metrics["loss"] == pytest.approx(checkpoint["val_loss"], rel=1e-4)
    assert metrics["accuracy"] == pytest.approx(checkpoint["val_accuracy"])
    assert TrainConfig.from_dict(checkpoint["config"]).epochs == 3


def test_lr_follows_the_notebooks_cosine_schedule_per_epoch(mnist_dir, tmp_path):
    run(_cfg(mnist_dir, tmp_path, epochs=5, sanity_check=True))
    lrs = read_json(tmp_path / HISTORY)["lr"]
    assert lrs == pytest.approx([1e-3, 5.05e-4, 1e-5, 5.05e-4, 1e-3])


def test_same_seed_same_history_and_weights(mnist_dir, tmp_path, short_run):
    out, _ = short_run
    run(_cfg(mnist_dir, tmp_path, epochs=3, epoch_length=300))
    assert _metrics_without_times(tmp_path) == _metrics_without_times(out)
    for a, b in zip(_weights(tmp_path / BEST_MODEL).values(), _weights(out / BEST_MODEL).values()):
        assert torch.equal(a, b)


def test_resume_after_an_epoch_ends_exactly_like_an_uninterrupted_run(mnist_dir, tmp_path, short_run):
    out, _ = short_run
    run(_cfg(mnist_dir, tmp_path, epochs=2, epoch_length=300))
    result = run(_cfg(mnist_dir, tmp_path, epochs=3, epoch_length=300, resume=True))
    assert result["epochs_run"] == 3
    assert _metrics_without_times(tmp_path) == _metrics_without_times(out)
    final, reference = (_weights(d / TRAINING_CHECKPOINT) for d in (tmp_path, out))
    for name in reference:
        assert torch.equal(final[name], reference[name]), name
    trainer_state = torch.load(tmp_path / TRAINING_CHECKPOINT, weights_only=True)["trainer"]
    assert trainer_state["iteration"] == 900 and trainer_state["epoch_length"] == 300


def test_a_killed_run_resumes_from_its_last_checkpoint_to_the_same_weights(mnist_dir, tmp_path, short_run):
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
    final, reference = (_weights(d / TRAINING_CHECKPOINT) for d in (tmp_path, out))
    for name in reference:
        assert torch.equal(final[name], reference[name]), name


def test_resume_when_already_complete_only_evaluates(mnist_dir, short_run, tmp_path):
    out, result = short_run
    import shutil

    shutil.copytree(out, tmp_path / "run")
    again = run(_cfg(mnist_dir, tmp_path / "run", epochs=3, epoch_length=300, resume=True))
    assert again["test_accuracy"] == result["test_accuracy"] and again["epochs_run"] == 3


def test_resume_refuses_other_settings_or_a_missing_checkpoint(mnist_dir, short_run, tmp_path):
    out, _ = short_run
    with pytest.raises(ValueError, match="--batch-size"):
        run(_cfg(mnist_dir, out, epochs=4, epoch_length=300, batch_size=64, resume=True))
    with pytest.raises(FileNotFoundError, match="resume"):
        run(_cfg(mnist_dir, tmp_path, resume=True))


def test_divergence_is_reported_not_hidden(mnist_dir, tmp_path):
    # Adam's steps are lr-sized: at 1e38 the weights overflow and the loss turns NaN in a few iterations
    with pytest.raises(TrainingDiverged, match="lower --lr"):
        run(_cfg(mnist_dir, tmp_path, epochs=2, epoch_length=50, lr=1e38, eta_min=0.0))


def test_augmented_one_cycle_run_is_reproducible_and_resumes_exactly_after_a_kill(mnist_dir, tmp_path):
    flags = ["--epochs", "3", "--epoch-length", "50", "--augment", "--schedule", "onecycle", "--lr", "3e-3"]
    reference = tmp_path / "reference"
    assert main(["--data-dir", str(mnist_dir), "--no-download", "--device", "cpu", "--output-dir", str(reference),
                 "--no-progress", *flags]) == 0
    lrs = read_json(reference / HISTORY)["lr"]
    assert lrs[0] > lrs[1] > lrs[2] and lrs[2] < 1e-6  # past the warm-up, annealing to ~0 at the last step
    with pytest.raises(ValueError, match="--epochs"):  # a one-cycle schedule cannot be stretched on resume
        run(_cfg(mnist_dir, reference, epochs=4, epoch_length=50, augment=True, schedule="onecycle", lr=3e-3,
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
    assert _metrics_without_times(interrupted) == _metrics_without_times(reference)
    final, expected = (_weights(d / TRAINING_CHECKPOINT) for d in (interrupted, reference))
    for name in expected:
        assert torch.equal(final[name], expected[name]), name


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_deterministic_cuda_run_resumes_bit_for_bit(mnist_dir, tmp_path):
    """Graph replays that read the one-cycle lr and beta1 from device tensors, augmentation drawn on the GPU: a run
    stopped after its first epoch and resumed (warm-up steps, then a new capture) ends with the same bits."""
    flags = dict(device="cuda", deterministic=True, epochs=2, epoch_length=40, batch_size=64, augment=True,
                 elastic=True, schedule="onecycle", lr=3e-3)
    reference = train(_cfg(mnist_dir, tmp_path / "reference", **flags))
    assert reference.metrics["device"].startswith("cuda")
    best = torch.load(tmp_path / "reference" / BEST_MODEL, weights_only=True)  # no map_location: CPU tensors
    assert {tensor.device.type for tensor in best["model"].values()} == {"cpu"}
    interrupted = _cfg(mnist_dir, tmp_path / "interrupted", **flags)
    training = build_training(interrupted)
    assert training.engines.readout.step.use_graph  # OneCycleLR no longer means eager on CUDA
    training.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())
    with training.determinism:
        training.trainer.run(training.loaders["train"], max_epochs=2)  # stops after epoch 1 (checkpoint written)
    training.close()  # its trainer was run directly, not through run(): give the run directory up to the resume
    finished = train(interrupted.replace(resume=True))
    assert _metrics_without_times(tmp_path / "interrupted") == _metrics_without_times(tmp_path / "reference")
    final, expected = (_weights(tmp_path / d / TRAINING_CHECKPOINT) for d in ("interrupted", "reference"))
    for name in expected:
        assert torch.equal(final[name], expected[name]), name
    assert finished.metrics["test_accuracy"] == reference.metrics["test_accuracy"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_one_cycle_run_moves_between_cpu_and_a_graphed_cuda_step_on_resume(mnist_dir, tmp_path):
    """The checkpoint's optimizer state, not its implementation: fused on CPU, single-tensor capturable on CUDA."""
    cfg = _cfg(mnist_dir, tmp_path, epochs=3, epoch_length=20, batch_size=64, schedule="onecycle", lr=3e-3,
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
