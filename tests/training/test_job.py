"""One training job (``training.job``) on real MNIST: the Python API as a notebook uses it (train, attach a handler,
plot, load the model back, fine-tune), --config reproduction, TensorBoard logging; what a run writes, which
epoch it keeps, its schedule, its determinism and its divergence."""

import json

import matplotlib
import pytest
import torch
from helpers import history_without_times, saved_weights, train_config
from ignite.engine import Events
from matplotlib.figure import Figure
from PIL import Image

from ignite_lenet import checkpoints
from ignite_lenet.checkpoints import load_model
from ignite_lenet.config import TrainConfig
from ignite_lenet.files import read_json
from ignite_lenet.model import LeNet5
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
from ignite_lenet.train import main
from ignite_lenet.training.data import InMemoryLoader
from ignite_lenet.training.engines import create_evaluator
from ignite_lenet.training.job import TrainingDiverged, build_training, train


def test_a_notebook_session(mnist_dir, mnist_data, tmp_path):
    backend = matplotlib.get_backend()
    training = build_training(train_config(mnist_dir, tmp_path / "run", epochs=2, epoch_length=150))
    seen = []

    @training.trainer.on(Events.ITERATION_COMPLETED(every=50))
    def record_loss(engine):  # a user's own handler, attached before run()
        seen.append((engine.state.iteration, float(engine.state.output)))

    result = training.run()
    assert [i for i, _ in seen] == [50, 100, 150, 200, 250, 300] and all(0 < loss < 3 for _, loss in seen)
    assert isinstance(result.model, LeNet5) and not result.model.training
    assert next(result.model.parameters()).device.type == "cpu"
    assert result.history == read_json(tmp_path / "run" / HISTORY)
    assert result.metrics == read_json(tmp_path / "run" / METRICS)
    assert result.metrics["test_accuracy"] > 0.85 and result.best["epoch"] in (1, 2)

    figure = result.plot()
    assert isinstance(figure, Figure) and [ax.get_title() for ax in figure.axes] == ["Loss", "Accuracy"]
    assert matplotlib.get_backend() == backend  # no global backend switch

    # load it back in every form, then fine-tune one epoch from it
    for source in (tmp_path / "run", tmp_path / "run" / BEST_MODEL,
                   tmp_path / "run" / TRAINING_CHECKPOINT):
        loaded = load_model(source)
        for a, b in zip(loaded.state_dict().values(), result.model.state_dict().values()):
            assert torch.equal(a, b) or source.name == TRAINING_CHECKPOINT
    before = result.metrics["test_accuracy"]
    tuned = train(train_config(mnist_dir, tmp_path / "tuned", epochs=1, epoch_length=150, lr=3e-4,
                       init_from=str(tmp_path / "run")))
    assert tuned.metrics["test_accuracy"] >= before - 0.01  # starts from the trained weights, not from scratch
    with torch.no_grad():
        first = LeNet5()
        first.load_state_dict(load_model(tmp_path / "run").state_dict())
        assert (first(mnist_data.test.images[:100]).argmax(1) == mnist_data.test.labels[:100]).float().mean() > 0.8


def test_keyword_overrides_and_lazy_package_imports(mnist_dir, tmp_path):
    import ignite_lenet.train  # the command-line module: importing it rebinds the package's ``train`` to it

    assert set(ignite_lenet.__all__) >= {"TrainConfig", "train", "load_model", "build_training", "TrainResult"}
    result = ignite_lenet.train(train_config(mnist_dir, tmp_path, epochs=1), epoch_length=20, seed=3)
    assert result.metrics["epochs_run"] == 1
    config = read_json(tmp_path / CONFIG)
    assert (config["epoch_length"], config["seed"]) == (20, 3) and result.metrics["epochs_run"] == 1
    with pytest.raises(ValueError, match="--epochs"):
        train(train_config(mnist_dir, tmp_path), epochs=0)
    with pytest.raises(TypeError):
        train(train_config(mnist_dir, tmp_path), epoch=2)  # a typo is an error, not ignored


def test_config_file_reproduces_a_run_exactly(mnist_dir, tmp_path):
    first = tmp_path / "first"
    assert main(["--data-dir", str(mnist_dir), "--no-download", "--device", "cpu", "--output-dir", str(first),
                 "--epochs", "2", "--epoch-length", "60", "--seed", "5", "--batch-size", "64", "--no-progress"]) == 0
    again = tmp_path / "again"
    assert main(["--config", str(first / CONFIG), "--output-dir", str(again)]) == 0
    strip = lambda d: {k: v for k, v in read_json(d / HISTORY).items() if k != "epoch_time_s"}  # noqa: E731
    assert strip(again) == strip(first)
    config = read_json(again / CONFIG)
    assert config["seed"] == 5 and config["batch_size"] == 64 and config["output_dir"] == str(again)


def test_tensorboard_logs_the_named_scalars(mnist_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(train_config(mnist_dir, tmp_path, epochs=2, epoch_length=30, ema_decay=0.9, tensorboard=True))
    logs = tmp_path / "tensorboard"
    accumulator = EventAccumulator(str(logs))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    expected = {"training/loss", "lr/group_0"} | {f"{split}/{name}" for split in ("train", "val", "val_ema")
                                                  for name in ("loss", "accuracy")}
    assert expected <= tags, tags
    assert len(accumulator.Scalars("training/loss")) == 60  # every iteration on CPU
    val = accumulator.Scalars("val/accuracy")
    assert [e.step for e in val] == [1, 2]  # the trainer's epoch as the step
    assert [e.value for e in val] == pytest.approx(result.history["val"]["accuracy"])


def test_progress_bar_is_off_in_a_pipe_and_tensorboard_missing_is_one_line(mnist_dir, tmp_path, monkeypatch, capsys):
    training = build_training(train_config(mnist_dir, tmp_path, epochs=1, epoch_length=5, progress=True))
    assert training.attached.progress_bar is None  # pytest captures stderr: no terminal, no notebook
    monkeypatch.setitem(__import__("sys").modules, "tensorboard", None)
    code = main(["--data-dir", str(mnist_dir), "--no-download", "--output-dir", str(tmp_path / "tb"),
                 "--epochs", "1", "--epoch-length", "5", "--tensorboard", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install tensorboard" in err and err.count("\n") == 1


def test_a_cpu_run_stays_on_the_cpu_whatever_ignites_default_device(mnist_dir, tmp_path, monkeypatch):
    """ignite's default device (``idist.device()``) is CUDA on any machine with a GPU; ``--device cpu`` must still
    train and evaluate on the CPU. Simulated here by a default device nothing can compute on ("meta")."""
    import ignite.distributed
    import ignite.distributed.utils

    for module in (ignite.distributed, ignite.distributed.utils):
        monkeypatch.setattr(module, "device", lambda: torch.device("meta"))
    result = train(train_config(mnist_dir, tmp_path, epochs=1, epoch_length=10))
    assert next(result.model.parameters()).device.type == "cpu"
    assert result.metrics["device"] == "cpu" and 0.1 < result.metrics["test_accuracy"] <= 1.0



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
    train(train_config(mnist_dir, tmp_path, epochs=5, sanity_check=True))
    lrs = read_json(tmp_path / HISTORY)["lr"]
    assert lrs == pytest.approx([1e-3, 5.05e-4, 1e-5, 5.05e-4, 1e-3])



def test_same_seed_same_history_andsaved_weights(mnist_dir, tmp_path, short_run):
    out, _ = short_run
    train(train_config(mnist_dir, tmp_path, epochs=3, epoch_length=300))
    assert history_without_times(tmp_path) == history_without_times(out)
    for a, b in zip(saved_weights(tmp_path / BEST_MODEL).values(), saved_weights(out / BEST_MODEL).values()):
        assert torch.equal(a, b)



def test_divergence_is_reported_not_hidden(mnist_dir, tmp_path):
    # Adam's steps are lr-sized: at 1e38 the weights overflow and the loss turns NaN in a few iterations
    with pytest.raises(TrainingDiverged, match="lower --lr"):
        train(train_config(mnist_dir, tmp_path, epochs=2, epoch_length=50, lr=1e38, eta_min=0.0))

