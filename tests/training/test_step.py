"""TrainStep: the padded, weighted step equals the plain summed step (CPU, real MNIST); on CUDA the graph
replays give the eager step's weights, follow LR changes, handle short batches and resume (skipped without CUDA)."""

import copy
import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events, create_supervised_trainer
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR

from ignite_lenet.model import LeNet5, optimize_layout
from ignite_lenet.training.data import InMemoryLoader
from ignite_lenet.training.engines import create_evaluator
from ignite_lenet.training.handlers import attach_loss_readout
from ignite_lenet.training.notebook_baseline import notebook_loss
from ignite_lenet.training.optim import create_optimizer
from ignite_lenet.training import step as step_module
from ignite_lenet.training.step import (
    TrainStep,
    graphs_follow_beta1,
    reads_beta1_from_a_tensor,
    use_cuda_graphs,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model(device="cpu", seed=0):
    """LeNet-5 in the layout the product trains with on ``device`` (channels_last on CPU, NCHW on CUDA)."""
    torch.manual_seed(seed)
    return optimize_layout(LeNet5(), device).to(device)


def _pair(device="cpu", graphs=False, name="adam", weight_decay=0.0):
    """Two identical models, each with its own optimizer."""
    models = [_model(device), _model(device)]
    return [(m, create_optimizer(m.parameters(), name, 1e-3, weight_decay, device, graphs)) for m in models]


def _plain_step(model, optimizer, x, y, label_smoothing=0.0):
    """The notebook's step: summed cross-entropy over the real samples, nothing padded."""
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y, reduction="sum", label_smoothing=label_smoothing)
    loss.backward()
    optimizer.step()
    return loss.item() / len(y)


def _max_difference(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def _batches(split, sizes, device="cpu", seed=0):
    """Real MNIST batches of the given sizes, drawn in a seeded order."""
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    start, out = 0, []
    for n in sizes:
        idx = order[start:start + n]
        start += n
        out.append((split.images[idx].to(device), split.labels[idx].to(device)))
    return out


# -- CPU: the same math as the plain summed step


def _reference_trainer(model, optimizer):
    """Ignite's own supervised trainer with the notebook's summed loss: the step before CUDA graphs."""
    return create_supervised_trainer(model, optimizer, notebook_loss())


def test_full_batches_in_an_engine_match_ignites_supervised_trainer_bit_for_bit(mnist_data):
    (model_a, opt_a), (model_b, opt_b) = _pair()
    loader = InMemoryLoader(mnist_data.train, 32, shuffle=True, seed=0, max_batches=40)
    _reference_trainer(model_a, opt_a).run(loader, max_epochs=2)
    step = TrainStep(model_b, opt_b, batch_size=32)
    assert not step.use_graph  # CPU: eager
    trainer = Engine(step)
    trainer.run(loader, max_epochs=2)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)
    assert isinstance(trainer.state.output, torch.Tensor) and trainer.state.output.shape == ()


def test_eager_steps_on_a_short_last_batch_match_ignites_trainer_bit_for_bit(mnist_data):
    """On CPU a short batch runs as itself (no padding): the notebook recipe's full epochs stay bit-identical."""
    (model_a, opt_a), (model_b, opt_b) = _pair()
    split = mnist_data.train.subset(torch.arange(1000))  # 31 batches of 32, then one of 8
    loader = InMemoryLoader(split, 32, shuffle=True, seed=0)
    _reference_trainer(model_a, opt_a).run(loader, max_epochs=2)
    Engine(TrainStep(model_b, opt_b, batch_size=32)).run(loader, max_epochs=2)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_short_batches_are_padded_with_zero_weight_samples(mnist_data, label_smoothing):
    (model_a, opt_a), (model_b, opt_b) = _pair()
    step = TrainStep(model_b, opt_b, batch_size=32, label_smoothing=label_smoothing, pad_short_batches=True)
    for x, y in _batches(mnist_data.train, [32, 20, 32, 7, 7, 32, 1, 32]):
        plain = _plain_step(model_a, opt_a, x, y, label_smoothing)
        ours = step(None, (x, y)).item()
        assert ours == pytest.approx(plain, rel=1e-6)
        for p, q in zip(model_a.parameters(), model_b.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6)
    assert _max_difference(model_a, model_b) < 1e-6
    assert step._x is not None and step._x[1:].abs().sum() == 0  # padding is zeros, not stale images


def test_adamw_with_weight_decay_matches_the_plain_step(mnist_data):
    (model_a, opt_a), (model_b, opt_b) = _pair(name="adamw", weight_decay=0.05)
    assert isinstance(opt_b, torch.optim.AdamW) and opt_b.param_groups[0]["weight_decay"] == 0.05
    step = TrainStep(model_b, opt_b, batch_size=32)
    for x, y in _batches(mnist_data.train, [32, 32, 16, 32]):
        _plain_step(model_a, opt_a, x, y)
        step(None, (x, y))
    assert _max_difference(model_a, model_b) < 1e-6


def test_engine_with_schedulers_and_the_loss_readout(mnist_data):
    """Cosine per epoch and one-cycle per iteration, as train.py attaches them: identical weights and lrs."""
    (model_a, opt_a), (model_b, opt_b) = _pair()
    loader = InMemoryLoader(mnist_data.train, 32, shuffle=True, seed=1, max_batches=25)
    trainers = [_reference_trainer(model_a, opt_a), Engine(TrainStep(model_b, opt_b, batch_size=32))]
    lrs = [[], []]
    for trainer, opt, seen in zip(trainers, (opt_a, opt_b), lrs):
        cosine, cycle = CosineAnnealingLR(opt, T_max=2, eta_min=1e-5), OneCycleLR(opt, 3e-3, total_steps=75)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _, s=cosine: s.step())
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _, s=cycle: s.step())
        trainer.add_event_handler(Events.ITERATION_COMPLETED,
                                  lambda _, o=opt, s=seen: s.append(o.param_groups[0]["lr"]))
    step = trainers[1]._process_function
    readout = attach_loss_readout(trainers[1], step, every=10)
    losses = []
    trainers[1].add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output.item()))
    window = []
    trainers[1].add_event_handler(readout.event, lambda: window.append(readout.value))
    for trainer in trainers:
        trainer.run(loader, max_epochs=3)
    assert lrs[0] == lrs[1] and len(set(lrs[1])) > 50
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)
    # the readout is the mean of the per-step losses of its window (10 steps, or the epoch's last 5)
    assert window[0] == pytest.approx(sum(losses[:10]) / 10, rel=1e-5)
    assert window[2] == pytest.approx(sum(losses[20:25]) / 5, rel=1e-5)


def test_a_reloaded_optimizer_state_resets_the_step(mnist_data):
    (model, opt), _ = _pair()
    step = TrainStep(model, opt, batch_size=32)
    resets = []
    step.reset = lambda: resets.append(True)  # what the load hook calls
    x, y = _batches(mnist_data.train, [32])[0]
    step(None, (x, y))
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert resets == [True]


def test_bad_batches_and_settings_are_refused(mnist_data):
    (model, opt), _ = _pair()
    step = TrainStep(model, opt, batch_size=8, pad_short_batches=True)  # the static batch, as graphs use
    x, y = _batches(mnist_data.train, [9])[0]
    with pytest.raises(ValueError, match="expected a batch of 1 to 8 images"):
        step(None, (x, y))
    step(None, (x[:8], y[:8]))
    step(None, (x[:5], y[:5]))  # a short batch: copied into the static batch
    with pytest.raises(ValueError, match="one shape and dtype"):
        step(None, (x[:4, :, :16], y[:4]))
    with pytest.raises(ValueError, match="CUDA graphs need the model on a CUDA device"):
        TrainStep(model, opt, batch_size=8, use_graph=True)
    with pytest.raises(ValueError, match="batch_size"):
        TrainStep(model, opt, batch_size=0)
    with pytest.raises(ValueError, match="one of adam, adamw"):
        create_optimizer(model.parameters(), "sgd")
    plain = torch.optim.Adam(model.parameters(), foreach=True)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="cannot be captured"):
            TrainStep(model.cuda(), plain, batch_size=8, use_graph=True)


def test_when_graphs_are_used(monkeypatch):
    assert use_cuda_graphs(None, "cuda") and use_cuda_graphs(True, "cuda")
    assert not use_cuda_graphs(False, "cuda")
    assert not use_cuda_graphs(True, "cpu") and not use_cuda_graphs(None, "cpu")  # CPU ignores the flag
    assert not use_cuda_graphs(None, "cuda", world_size=2)
    with pytest.raises(ValueError, match="data-parallel"):
        use_cuda_graphs(True, "cuda", world_size=2)
    # OneCycleLR's momentum cycle: a graph that reads beta1 from a tensor (this torch), else eager
    assert graphs_follow_beta1()
    assert use_cuda_graphs(None, "cuda", varying_betas=True) and use_cuda_graphs(True, "cuda", varying_betas=True)
    monkeypatch.setattr(step_module, "graphs_follow_beta1", lambda: False)  # an older torch
    assert not use_cuda_graphs(None, "cuda", varying_betas=True)
    with pytest.raises(ValueError, match="onecycle.*torch >= 2.6"):
        use_cuda_graphs(True, "cuda", varying_betas=True)


@pytest.mark.parametrize("version, follows", [("2.4.1", False), ("2.5.1+cu124", False), ("2.6.0", True),
                                              ("2.11.0+cu130", True), ("2.14.1", True), ("3.0.0a0+git1234", True)])
def test_which_torch_reads_beta1_from_a_tensor(version, follows):
    assert graphs_follow_beta1(version) is follows


def test_the_optimizer_of_a_graphed_one_cycle_run_reads_beta1_from_a_tensor():
    """What ``create_optimizer`` builds for each case (built on CPU tensors: the flags are what matters here)."""
    weight = torch.nn.Parameter(torch.zeros(3))

    def group(**kw):
        return create_optimizer([weight], "adamw", 3e-3, 0.05, **kw).param_groups[0]

    one_cycle_graph = group(device="cuda", graphs=True, varying_betas=True)
    assert one_cycle_graph["capturable"] and not one_cycle_graph["fused"] and one_cycle_graph["foreach"] is False
    assert reads_beta1_from_a_tensor(one_cycle_graph)
    for kw in ({}, {"device": "cuda", "graphs": True}, {"device": "cuda", "varying_betas": True},
               {"device": "cpu", "graphs": True, "varying_betas": True}):  # the fused kernel: beta1 a number
        assert group(**kw)["fused"] and not reads_beta1_from_a_tensor(group(**kw)), kw
    assert not reads_beta1_from_a_tensor(torch.optim.Adam([weight], capturable=True).param_groups[0])  # foreach
    assert not reads_beta1_from_a_tensor(torch.optim.SGD([weight]).param_groups[0])


def test_a_loaded_state_keeps_the_optimizers_own_implementation():
    """A checkpoint holds training state, not how its machine computed it: a graphed one-cycle CUDA run's
    optimizer state (single-tensor, capturable) resumes on a CPU's fused Adam and a CPU run's on the other."""
    weights = [torch.nn.Parameter(torch.ones(3)) for _ in range(3)]
    cpu = create_optimizer([weights[0]], "adamw", 3e-3, 0.05)
    weights[0].grad = torch.ones(3)
    cpu.step()
    saved = cpu.state_dict()
    graphed = {**saved, "param_groups": [{**g, "fused": None, "foreach": False, "capturable": True}
                                         for g in saved["param_groups"]]}  # as a graphed one-cycle run saves it
    resumed = create_optimizer([weights[1]], "adamw", 3e-3, 0.05)
    resumed.load_state_dict(graphed)
    group = resumed.param_groups[0]
    assert group["fused"] and not group["capturable"] and group["lr"] == 3e-3
    weights[1].grad = torch.ones(3)
    resumed.step()  # with the loaded flags: AssertionError, capturable needs a CUDA device
    # the loaded moments went on: after two steps of gradient 1, v = 0.999 * 0.001 + 0.001
    torch.testing.assert_close(resumed.state[weights[1]]["exp_avg_sq"], torch.full((3,), 1.999e-3), rtol=1e-6, atol=0)
    assert graphed["param_groups"][0]["capturable"]  # the caller's dict is untouched
    on_cuda = create_optimizer([weights[2]], "adamw", 3e-3, 0.05, device="cuda", graphs=True, varying_betas=True)
    on_cuda.load_state_dict(saved)
    assert reads_beta1_from_a_tensor(on_cuda.param_groups[0])
    with pytest.raises(ValueError, match="different number of parameter groups"):
        resumed.load_state_dict({**saved, "param_groups": saved["param_groups"] * 2})


def test_cpu_steps_read_the_param_groups_floats(mnist_data):
    """The learning rate stays the Python float on CPU (the notebook's arithmetic); device tensors are CUDA's."""
    (model, opt), _ = _pair()
    step = TrainStep(model, opt, batch_size=32)
    seen = []
    opt.register_step_pre_hook(lambda o, *_: seen.append((o.param_groups[0]["lr"], o.param_groups[0]["betas"])))
    step(None, _batches(mnist_data.train, [32])[0])
    assert seen == [(1e-3, (0.9, 0.999))] and not step._device_values and not step._lrs


# -- CUDA: graph replays against eager steps (skipped without a GPU)


def _run(step, batches):
    for batch in batches:
        step(None, batch)


@cuda
@pytest.mark.cuda
def test_graph_replays_give_the_eager_weights(mnist_data):
    (model_g, opt_g), (model_e, opt_e) = _pair("cuda", graphs=True)
    graphed = TrainStep(model_g, opt_g, batch_size=32)
    # eager on the padded batch too: the same shapes, so the same cuDNN algorithms (TF32 convolutions by default
    # round differently per algorithm); that padding changes nothing is test_short_batches_are_padded_...'s (CPU)
    eager = TrainStep(model_e, opt_e, batch_size=32, use_graph=False, pad_short_batches=True)
    sizes = [32] * 49 + [20]
    batches = _batches(mnist_data.train, sizes * 6, "cuda")  # 300 steps, a short batch every 50
    losses = []
    for batch in batches:
        losses.append((graphed(None, batch).clone(), eager(None, batch).clone()))
    assert graphed.graphed and graphed.captures == 1 and not eager.graphed
    assert _max_difference(model_g, model_e) < 1e-5
    assert max(abs(a.item() - b.item()) for a, b in losses) < 1e-4


@cuda
@pytest.mark.cuda
def test_replays_follow_the_learning_rate(mnist_data):
    (model_g, opt_g), (model_e, opt_e) = _pair("cuda", graphs=True)
    graphed = TrainStep(model_g, opt_g, batch_size=32)
    eager = TrainStep(model_e, opt_e, batch_size=32, use_graph=False)
    batches = _batches(mnist_data.train, [32] * 60, "cuda")
    _run(graphed, batches[:10])
    _run(eager, batches[:10])
    assert graphed.graphed
    for opt in (opt_g, opt_e):
        opt.param_groups[0]["lr"] = 0.0
    before = [p.detach().clone() for p in model_g.parameters()]
    graphed(None, batches[10])
    eager(None, batches[10])
    assert all(torch.equal(p, q) for p, q in zip(before, model_g.parameters()))  # lr 0: nothing moved
    for opt in (opt_g, opt_e):
        opt.param_groups[0]["lr"] = 2e-3
    schedulers = [CosineAnnealingLR(opt, T_max=5, eta_min=1e-5) for opt in (opt_g, opt_e)]
    for i in range(11, 60):
        graphed(None, batches[i])
        eager(None, batches[i])
        for s in schedulers:
            s.step()
    assert graphed.captures == 1
    assert _max_difference(model_g, model_e) < 1e-5


def _read(buffer):
    """What a resume reads: the saved checkpoint, loaded afresh from its bytes (as a new process reads the file).

    ``Optimizer.load_state_dict`` adopts the state tensors it is given when their dtype and device already fit,
    so training on after a load advances those tensors in place: a second resume from the same loaded dict
    would start from the moments of a later step than the weights beside them.
    """
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[cuda, pytest.mark.cuda])])
def test_resume_recaptures_and_continues_like_an_uninterrupted_run(mnist_data, device):
    """CPU: eager steps, bit for bit. CUDA: the load drops the graph, the step captures again, same weights."""
    graphs = device == "cuda"
    (model, opt), (fresh_model, fresh_opt) = _pair(device, graphs=graphs)
    step = TrainStep(model, opt, batch_size=32)
    batches = _batches(mnist_data.train, [32] * 40 + [12] + [32] * 40, device)
    _run(step, batches[:30])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    _run(step, batches[30:])
    uninterrupted = [p.detach().clone() for p in model.parameters()]

    def assert_matches(resumed):
        for p, q in zip(uninterrupted, resumed.parameters()):
            if graphs:  # a graph's kernels may round differently from the warm-up's eager ones
                assert (p - q).abs().max().item() < 1e-5
            else:
                assert torch.equal(p, q)

    # resume into the same objects: the optimizer's state tensors are replaced, the step captures again
    saved = _read(buffer)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    assert not step.graphed
    _run(step, batches[30:])
    assert step.captures == (2 if graphs else 0)
    assert_matches(model)
    # and into new objects, as a new process would
    saved = _read(buffer)
    fresh_model.load_state_dict(saved["model"])
    fresh_opt.load_state_dict(saved["optimizer"])
    _run(TrainStep(fresh_model, fresh_opt, batch_size=32), batches[30:])
    assert_matches(fresh_model)


@cuda
@pytest.mark.cuda
def test_an_engine_with_evaluation_between_epochs(mnist_data):
    (model_g, opt_g), (model_e, opt_e) = _pair("cuda", graphs=True)
    train = mnist_data.train.to("cuda")
    loader = InMemoryLoader(train, 32, shuffle=True, seed=0, max_batches=60)
    val = InMemoryLoader(mnist_data.val, 1024)
    results = []
    for model, opt, use_graph in ((model_g, opt_g, True), (model_e, opt_e, False)):
        step = TrainStep(model, opt, batch_size=32, use_graph=use_graph)
        trainer = Engine(step)
        evaluator = create_evaluator(model, "cuda")
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _, ev=evaluator: ev.run(val))
        scheduler = CosineAnnealingLR(opt, T_max=2, eta_min=1e-5)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _, s=scheduler: s.step())
        trainer.run(loader, max_epochs=3)
        results.append(evaluator.state.metrics)
    assert _max_difference(model_g, model_e) < 1e-5
    assert results[0]["accuracy"] == pytest.approx(results[1]["accuracy"], abs=2e-3)


@cuda
@pytest.mark.cuda
def test_a_changed_beta_is_captured_again(mnist_data):
    (model_g, opt_g), (model_e, opt_e) = _pair("cuda", graphs=True)
    graphed = TrainStep(model_g, opt_g, batch_size=32)
    eager = TrainStep(model_e, opt_e, batch_size=32, use_graph=False)
    batches = _batches(mnist_data.train, [32] * 20, "cuda")
    _run(graphed, batches[:10])
    _run(eager, batches[:10])
    for opt in (opt_g, opt_e):
        opt.param_groups[0]["betas"] = (0.8, 0.999)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(graphed, batches[10:])
    _run(eager, batches[10:])
    assert graphed.captures == 2 and any("capturing the step again" in str(w.message) for w in caught)
    assert _max_difference(model_g, model_e) < 1e-5


@cuda
@pytest.mark.cuda
def test_evaluation_on_cuda_makes_no_host_sync_per_batch(mnist_data):
    """Ignite's Accuracy and Loss accumulate on the device: iterations never wait for the GPU."""
    model = _model("cuda")
    evaluator = create_evaluator(model, "cuda")
    evaluator.add_event_handler(Events.ITERATION_STARTED, lambda: torch.cuda.set_sync_debug_mode("error"))
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda: torch.cuda.set_sync_debug_mode("default"))
    val = mnist_data.val
    loader = [(val.images[i:i + 1024].cuda(), val.labels[i:i + 1024].cuda()) for i in range(0, 4096, 1024)]
    create_evaluator(model, "cuda").run(loader[:1])  # lazy CUDA initialisation (handles, workspaces) first
    try:
        metrics = evaluator.run(loader).metrics
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert 0.0 <= metrics["accuracy"] <= 1.0


@cuda
@pytest.mark.cuda
def test_deterministic_graph_runs_are_identical(mnist_data):
    from ignite_lenet.training.devices import configure_determinism

    weights = []
    with configure_determinism(True):
        for _ in range(2):
            (model, opt), _ = _pair("cuda", graphs=True)
            _run(TrainStep(model, opt, batch_size=32), _batches(mnist_data.train, [32] * 50 + [9], "cuda"))
            weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(p, q) for p, q in zip(*weights))


def _one_cycle_optimizer(model, graphs=True):
    return create_optimizer(model.parameters(), "adamw", 3e-3, 0.05, "cuda", graphs=graphs, varying_betas=True)


@cuda
@pytest.mark.cuda
def test_one_cycle_replays_follow_beta1_from_one_capture(mnist_data):
    """OneCycleLR writes a new beta1 every step: the graph reads it from a tensor, as eager steps do."""
    models = [_model("cuda") for _ in range(3)]
    graphed = TrainStep(models[0], _one_cycle_optimizer(models[0]), batch_size=32)
    eager = TrainStep(models[1], _one_cycle_optimizer(models[1]), batch_size=32, use_graph=False,
                      pad_short_batches=True)
    fixed = TrainStep(models[2], _one_cycle_optimizer(models[2]), batch_size=32, use_graph=False,
                      pad_short_batches=True)
    assert graphed._device_beta1 and eager._device_beta1
    schedulers = [OneCycleLR(step.optimizer, 3e-3, total_steps=60, cycle_momentum=step is not fixed)
                  for step in (graphed, eager, fixed)]
    beta1s = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")
        for batch in _batches(mnist_data.train, [32] * 29 + [20] + [32] * 30, "cuda"):
            for step, scheduler in zip((graphed, eager, fixed), schedulers):
                step(None, batch)
                scheduler.step()
            beta1s.append(graphed.optimizer.param_groups[0]["betas"][0])
    assert graphed.graphed and graphed.captures == 1  # no capture per beta1
    assert all(type(b) is float for b in beta1s) and len(set(beta1s)) > 50  # the schedule's own floats, restored
    assert _max_difference(models[0], models[1]) < 1e-5
    assert _max_difference(models[0], models[2]) > 1e-4  # beta1 matters: a graph that held it would show


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("varying_betas", [False, True], ids=["cosine", "onecycle"])
def test_a_resumed_deterministic_graph_run_is_bit_identical(mnist_data, varying_betas):
    """The warm-up steps after a resume take the replays' float32 lr (and beta1): the same bits as replays."""
    from ignite_lenet.training.devices import configure_determinism

    def build():
        model = _model("cuda")
        optimizer = create_optimizer(model.parameters(), "adam", 1e-3, 0.0, "cuda", True, varying_betas)
        scheduler = (OneCycleLR(optimizer, 3e-3, total_steps=80) if varying_betas
                     else CosineAnnealingLR(optimizer, T_max=20, eta_min=1e-5))
        return model, optimizer, scheduler, TrainStep(model, optimizer, batch_size=32)

    def train(step, scheduler, batches):
        for batch in batches:
            step(None, batch)
            scheduler.step()

    batches = _batches(mnist_data.train, [32] * 80, "cuda")
    with configure_determinism(True):
        model, optimizer, scheduler, step = build()
        train(step, scheduler, batches[:30])
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()}, buffer)
        train(step, scheduler, batches[30:])
        resumed_model, resumed_optimizer, resumed_scheduler, resumed_step = build()
        saved = _read(buffer)
        resumed_model.load_state_dict(saved["model"])
        resumed_optimizer.load_state_dict(saved["optimizer"])
        resumed_scheduler.load_state_dict(saved["scheduler"])
        train(resumed_step, resumed_scheduler, batches[30:])  # 3 eager warm-ups, a capture, replays
    assert step.captures == resumed_step.captures == 1
    for p, q in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(p, q)


def test_a_nan_loss_stops_training_at_the_next_readout(mnist_data):
    from ignite.handlers import TerminateOnNan

    (model, opt), _ = _pair()
    batches = _batches(mnist_data.train, [32] * 12)
    batches[6][0][0, 0, 0, 0] = float("nan")  # one pixel of one image of step 7
    step = TrainStep(model, opt, batch_size=32)
    trainer = Engine(step)
    readout = attach_loss_readout(trainer, step, every=5)
    trainer.add_event_handler(readout.event, TerminateOnNan(output_transform=lambda _: readout.value))
    epochs_completed = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: epochs_completed.append(True))
    trainer.run(batches, max_epochs=2)
    assert trainer.state.iteration == 10 and readout.value != readout.value  # stopped at the readout after it: NaN
    assert not epochs_completed
