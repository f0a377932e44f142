import errno

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine

from ignite_lenet.files import WriteError
from ignite_lenet.model import LeNet5, optimize_layout
from ignite_lenet.training.data import InMemoryLoader
from ignite_lenet.training.engines import create_evaluator, create_trainer, quiet_reported_errors


def test_evaluator_loss_is_the_per_sample_mean_not_batch_size_times_it(mnist_data):
    torch.manual_seed(0)
    model = optimize_layout(LeNet5()).eval()
    val = mnist_data.val
    # a batch size that does not divide 5000, so the last batch is smaller
    metrics = create_evaluator(model).run(InMemoryLoader(val, batch_size=384)).metrics
    with torch.no_grad():
        logits = model(val.images)
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, val.labels).item(), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx((logits.argmax(1) == val.labels).float().mean().item())


def test_trainer_uses_the_summed_loss_and_reports_it_per_sample(mnist_data):
    torch.manual_seed(0)
    model = optimize_layout(LeNet5())
    reference = optimize_layout(LeNet5())
    reference.load_state_dict(model.state_dict())
    batch = (mnist_data.train.images[:32], mnist_data.train.labels[:32])

    trainer, readout = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), batch_size=32)
    trainer.run([batch], max_epochs=1)

    # the same step by hand with the notebook's reduction="sum"
    loss = F.cross_entropy(reference(batch[0]), batch[1], reduction="sum")
    loss.backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.01 * p.grad
    assert trainer.state.output.item() == pytest.approx(loss.item() / 32, rel=1e-5)
    assert readout.value == pytest.approx(loss.item() / 32, rel=1e-5)  # read at the epoch's (only) step
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)


def test_confusion_matrix_counts_every_test_image(mnist_data):
    model = optimize_layout(LeNet5()).eval()
    metrics = create_evaluator(model, confusion_matrix=True).run(InMemoryLoader(mnist_data.test, 1000)).metrics
    cm = metrics["confusion_matrix"]
    assert cm.shape == (10, 10) and cm.sum().item() == 10000
    assert cm.sum(1).tolist() == torch.bincount(mnist_data.test.labels).tolist()
    assert cm.diag().sum().item() / 10000 == pytest.approx(metrics["accuracy"])


def _failing_engine(error: BaseException) -> Engine:
    def step(engine, batch):
        raise error

    return Engine(step)


@pytest.mark.parametrize("error, ignite_says_it", [
    (KeyboardInterrupt(), False),  # the command line's "interrupted; continue with --resume" is the only line
    (WriteError(errno.ENOSPC, "No space left on device", "run/best_model.pt"), False),  # said once, by us
    (RuntimeError("a bug"), True),  # anything else keeps Ignite's message
])
def test_ignites_terminating_line_is_left_out_only_for_what_we_report(error, ignite_says_it, caplog):
    with quiet_reported_errors([_failing_engine(error)]), pytest.raises(type(error)):
        _failing_engine(error).run([0])
    said = [r.getMessage() for r in caplog.records if "terminating due to exception" in r.getMessage()]
    assert bool(said) == ignite_says_it, said
    caplog.clear()
    with pytest.raises(type(error)):  # outside the block Ignite's loggers are as they were
        _failing_engine(error).run([0])
    assert any("terminating due to exception" in r.getMessage() for r in caplog.records)
