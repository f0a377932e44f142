"""The optimizer of a run (``training.optim``): Adam's and AdamW's decay, refusals, and an implementation that stays
its own when a checkpoint written by another one is loaded."""

import pytest
import torch

from ignite_lenet.model import LeNet5
from ignite_lenet.training.optim import IMPLEMENTATION, create_optimizer


def test_adamw_decay_is_decoupled_lr_times_decay_and_no_decay_means_no_step():
    # decoupled: w <- w * (1 - lr * wd); Adam's L2 decay would instead be normalised into an lr-sized step
    for name, decay, expected in (("adamw", 0.5, 1 - 1e-2 * 0.5), ("adam", 0.0, 1.0), ("adam", 0.5, 1 - 1e-2)):
        weight = torch.nn.Parameter(torch.ones(4))
        optimizer = create_optimizer([weight], name, lr=1e-2, weight_decay=decay)
        weight.grad = torch.zeros(4)
        optimizer.step()
        torch.testing.assert_close(weight.detach(), torch.full((4,), expected))


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "sgd"}, "optimizer must be one of adam, adamw, got 'sgd'"),
    ({"lr": 0.0}, "lr must be a positive number, got 0.0"),
    ({"lr": float("nan")}, "lr must be a positive number, got nan"),
    ({"weight_decay": -1e-4}, "weight_decay must be 0 or positive, got -0.0001"),
    ({"weight_decay": float("inf")}, "weight_decay must be 0 or positive, got inf"),
])
def test_bad_settings_are_refused_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        create_optimizer(LeNet5().parameters(), **kwargs)


def test_a_cpu_optimizer_is_fused_and_one_step_matches_the_reference_adam():
    torch.manual_seed(0)
    ours, reference = LeNet5(), LeNet5()
    reference.load_state_dict(ours.state_dict())
    fused = create_optimizer(ours.parameters(), lr=1e-3)
    plain = torch.optim.Adam(reference.parameters(), lr=1e-3, foreach=False)
    assert fused.param_groups[0]["fused"] is True and fused.param_groups[0]["capturable"] is False
    x, y = torch.rand(8, 1, 32, 32), torch.randint(0, 10, (8,))
    for model, optimizer in ((ours, fused), (reference, plain)):
        torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
        optimizer.step()
    for (name, a), b in zip(ours.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_a_checkpoint_of_another_implementation_loads_its_state_and_keeps_this_ones():
    """A graphed one-cycle CUDA run saves single-tensor capturable groups; resumed on a CPU, the state comes back
    and the groups stay fused, not capturable (which would assert that capturable needs CUDA)."""
    torch.manual_seed(0)
    model = LeNet5()
    saved_by = create_optimizer(model.parameters(), lr=3e-3)
    torch.nn.functional.cross_entropy(model(torch.rand(4, 1, 32, 32)), torch.tensor([1, 2, 3, 4])).backward()
    saved_by.step()
    state = saved_by.state_dict()
    state["param_groups"] = [{**g, "fused": None, "foreach": False, "capturable": True} for g in state["param_groups"]]
    given = {**state, "param_groups": [dict(g) for g in state["param_groups"]]}
    loading = create_optimizer(LeNet5().parameters(), lr=1e-3)
    loading.load_state_dict(given)
    group = loading.param_groups[0]
    assert {key: group[key] for key in IMPLEMENTATION} == {"fused": True, "foreach": None, "capturable": False}
    assert group["lr"] == 3e-3  # the settings of the run come from the checkpoint
    assert given["param_groups"][0]["capturable"] is True  # the caller's dict is left as it was
    for name, tensor in loading.state_dict()["state"][0].items():
        assert torch.equal(tensor, saved_by.state_dict()["state"][0][name]), name


def test_groups_that_do_not_pair_up_are_left_for_torch_to_refuse():
    optimizer = create_optimizer(LeNet5().parameters())
    state = optimizer.state_dict()
    state["param_groups"] = state["param_groups"] * 2
    with pytest.raises(ValueError, match="parameter groups"):
        optimizer.load_state_dict(state)
