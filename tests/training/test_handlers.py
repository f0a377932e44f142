"""Handlers driven by do-nothing Ignite engines, as Ignite's own tests do."""

import math

import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image

from ignite_lenet.model import LeNet5
from ignite_lenet.plots import plot_confusion_matrix, plot_curves
from ignite_lenet.spec import BEST_MODEL
from ignite_lenet.training.handlers import (
    attach_best_checkpoint,
    attach_curves,
    attach_early_stopping,
    attach_evaluation,
    attach_lr_scheduler,
    attach_terminate_on_nan,
)
from ignite_lenet.training.state import History, Selection


def _engine(outputs=None):
    return Engine(lambda engine, batch: None if outputs is None else outputs[engine.state.iteration - 1])


def _evaluator_with(losses):
    """An evaluator whose n-th run reports losses[n - 1] as its validation loss."""
    evaluator = _engine()
    runs = []

    @evaluator.on(Events.COMPLETED)
    def set_metrics(engine):
        runs.append(None)
        engine.state.metrics = {"loss": losses[len(runs) - 1], "accuracy": 1 - losses[len(runs) - 1]}

    # registered before any handler the test attaches, so those see the metrics
    return evaluator


@pytest.mark.parametrize("losses, patience, epochs_run", [
    ([1.0, 0.9, 0.95, 0.97, 0.5], 2, 4),  # two epochs without improvement after epoch 2
    ([1.0, 0.9, 0.8, 0.7, 0.6], 2, 5),    # always improving: never stops
    ([1.0, 1.1, 0.9, 1.2, 1.3], 1, 2),
])
def test_early_stopping_counts_epochs_without_a_lower_validation_loss(losses, patience, epochs_run):
    trainer = _engine()
    evaluator = _evaluator_with(losses)
    attach_early_stopping(trainer, Selection(LeNet5(), evaluator), patience)
    attach_evaluation(trainer, evaluator, [0])
    trainer.run([0], max_epochs=5)
    assert trainer.state.epoch == epochs_run


def test_terminate_on_nan_stops_the_trainer():
    trainer = _engine([0.5, 0.4, math.nan, 0.3, 0.2])
    attach_terminate_on_nan(trainer)
    trainer.run(range(5), max_epochs=1)
    assert trainer.state.iteration == 3 and math.isnan(trainer.state.output)


def test_best_checkpoint_is_replaced_only_by_a_better_epoch(tmp_path):
    trainer, model = _engine(), LeNet5()
    evaluator = _evaluator_with([0.5, 0.3, 0.4])
    best = attach_best_checkpoint(trainer, Selection(model, evaluator), {"lr": 1e-3}, tmp_path)
    saved = []

    @trainer.on(Events.EPOCH_STARTED)
    def perturb(engine):  # each epoch has different weights
        with torch.no_grad():
            model.fc2.bias.fill_(engine.state.epoch)

    attach_evaluation(trainer, evaluator, [0])
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: saved.append(sorted(p.name for p in tmp_path.iterdir())))
    trainer.run([0], max_epochs=3)
    checkpoint = torch.load(tmp_path / BEST_MODEL, weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["val_loss"] == 0.3 and checkpoint["config"] == {"lr": 1e-3}
    assert checkpoint["model"]["fc2.bias"][0].item() == 2.0
    assert saved == [[BEST_MODEL]] * 3  # one file, never a temporary left behind
    assert [priority for priority, _ in next(iter(best.state_dict().values()))] == [pytest.approx(-0.3)]


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before")  # no optimizer step here
def test_lr_scheduler_is_stepped_at_the_end_of_each_epoch():
    trainer = _engine()
    optimizer = torch.optim.SGD(LeNet5().parameters(), lr=1e-3)
    seen = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda: seen.append(optimizer.param_groups[0]["lr"]))
    scheduler = attach_lr_scheduler(trainer, optimizer, t_max=2, eta_min=1e-5)
    trainer.run([0], max_epochs=5)
    assert seen == pytest.approx([1e-3, 5.05e-4, 1e-5, 5.05e-4, 1e-3])
    assert scheduler.last_epoch == 5


@pytest.mark.parametrize("min_interval_s, drawn_after", [(0.0, [1, 2, 3, 4]), (3600.0, [4])])
def test_curves_are_redrawn_at_most_every_interval_and_at_the_end(tmp_path, min_interval_s, drawn_after):
    trainer, history = _engine(), History()
    metrics = {"loss": 0.5, "accuracy": 0.9}
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: history.record(metrics, metrics, 1e-3, 1.0))
    path = tmp_path / "curves.png"
    attach_curves(trainer, history, path, min_interval_s=min_interval_s)
    seen = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def look(engine):  # what curves.png shows after each epoch (the drawing handler fired first)
        if path.exists():
            seen.append(engine.state.epoch)
            path.unlink()

    trainer.run([0], max_epochs=4)
    assert seen == drawn_after
    assert not path.exists()  # COMPLETED does not draw the last epoch twice


def test_plots_are_pngs(tmp_path):
    history = {"train": {"loss": [0.5, 0.3], "accuracy": [0.8, 0.9]},
               "val": {"loss": [0.6, 0.4], "accuracy": [0.75, 0.85]}, "lr": [1e-3, 1e-4], "epoch_time_s": [1, 1]}
    plot_curves(history, tmp_path / "curves.png", best_epoch=2)
    plot_confusion_matrix(torch.eye(10, dtype=torch.long) * 7, tmp_path / "cm.png")
    for name in ("curves.png", "cm.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.height > 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "curves.png"]
