"""What a run keeps beside its engines (``training.state``): the history, the best-weights selection, and the
adapters that put plain values and scheduler positions into a checkpoint ``torch.load(weights_only=True)`` reads."""

import io

import pytest
import torch
from ignite.engine import Engine
from ignite.handlers import PiecewiseLinear

from ignite_lenet.model import LeNet5, Standardized
from ignite_lenet.training.state import History, ReplacingDiskSaver, SchedulerPosition, Selection, Value


def _evaluator(loss):
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.metrics = {"loss": loss, "accuracy": 1 - loss}
    return evaluator


def _through_a_file(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_history_best_epoch_is_the_first_lowest_validation_loss():
    history = History()
    assert history.best_epoch() is None and history.epochs == 0
    for loss in (0.5, 0.3, 0.3, 0.4):
        history.record({"loss": 1.0, "accuracy": 0.5}, {"loss": loss, "accuracy": 0.9}, lr=1e-3, epoch_time_s=1.0)
    assert history.epochs == 4 and history.best_epoch() == 2
    restored = History()
    restored.load_state_dict(_through_a_file(history.state_dict()))
    assert restored.to_dict() == history.to_dict()


def test_history_counts_the_ema_weights_loss_and_hands_out_copies():
    history = History()
    for val, ema in ((0.5, 0.6), (0.4, 0.2), (0.3, 0.35)):
        history.record({"loss": 1.0, "accuracy": 0.5}, {"loss": val, "accuracy": 0.9}, 1e-3, 1.0,
                       val_ema={"loss": ema, "accuracy": 0.95})
    assert history.best_epoch() == 2  # the EMA's 0.2 beats every raw loss
    assert history.to_dict()["val_ema"]["loss"] == [0.6, 0.2, 0.35]
    copy = history.to_dict()
    copy["val"]["loss"].append(0.0)  # a caller's copy does not change the run's history
    assert history.epochs == 3 and history.data["val"]["loss"] == [0.5, 0.4, 0.3]


def test_selection_takes_the_weights_of_the_lower_validation_loss_as_plain_cpu_tensors():
    raw, ema = LeNet5(), LeNet5()
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)
    without_ema = Selection(raw, _evaluator(0.3))
    assert without_ema.weights() == "raw" and without_ema.score() == -0.3
    better_ema = Selection(raw, _evaluator(0.3), ema, _evaluator(0.2))
    assert better_ema.weights() == "ema" and better_ema.score() == -0.2 and better_ema.metrics()["accuracy"] == 0.8
    for name, tensor in better_ema.state_dict().items():
        assert tensor.device.type == "cpu" and torch.equal(tensor, ema.state_dict()[name]), name
    worse_ema = Selection(raw, _evaluator(0.3), ema, _evaluator(0.4))
    assert worse_ema.weights() == "raw" and worse_ema.score() == -0.3


def test_selection_saves_a_standardised_model_as_the_plain_lenet5_it_equals():
    torch.manual_seed(0)
    standardized = Standardized(LeNet5(), 0.13, 0.31)
    state = Selection(standardized, _evaluator(0.3)).state_dict()
    plain = LeNet5()
    plain.load_state_dict(_through_a_file(state))
    x = torch.rand(4, 1, 32, 32)
    torch.testing.assert_close(plain(x), standardized(x), rtol=1e-5, atol=1e-5)


def test_value_and_scheduler_position_go_into_a_checkpoint_and_come_back():
    trainer = Engine(lambda engine, batch: None)
    trainer.state.epoch = 7
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = PiecewiseLinear(optimizer, "lr", milestones_values=[(0, 1.0), (10, 0.0)])
    for _ in range(4):
        scheduler(trainer)
    saved = _through_a_file({
        "epoch": Value(lambda: trainer.state.epoch).state_dict(),
        "scheduler": SchedulerPosition(scheduler).state_dict(),
    })
    assert saved == {"epoch": 7, "scheduler": {"event_index": 4}}
    fresh = PiecewiseLinear(optimizer, "lr", milestones_values=[(0, 1.0), (10, 0.0)])
    SchedulerPosition(fresh).load_state_dict(saved["scheduler"])
    fresh(trainer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.6)  # the 5th step of 1 -> 0 over 10
    again = PiecewiseLinear(optimizer, "lr", milestones_values=[(0, 1.0), (10, 0.0)])
    for _ in range(5):
        again(trainer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.6)  # an uninterrupted schedule agrees


def test_the_replacing_saver_keeps_one_readable_file_and_never_removes_it(tmp_path):
    saver = ReplacingDiskSaver(tmp_path)
    saver({"epoch": 1}, "best.pt")
    saver.remove("best.pt")  # Ignite's removal of the previous file: the atomic rename replaces it instead
    assert torch.load(tmp_path / "best.pt", weights_only=True) == {"epoch": 1}
    saver({"epoch": 2}, "best.pt")
    assert torch.load(tmp_path / "best.pt", weights_only=True) == {"epoch": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]  # no temporary file left behind
