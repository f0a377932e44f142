import pytest
import torch
import torch.nn.functional as F

from ignite_lenet.model import LeNet5, SigmoidTanh, count_parameters, optimize_layout, probabilities
from ignite_lenet.spec import INPUT_SHAPE, NUM_CLASSES
from ignite_lenet.training.notebook_baseline import NotebookLeNet5


def test_parameter_count_and_layer_shapes():
    model = LeNet5()
    assert count_parameters(model) == 61_706
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        "conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,),
        "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,),
        "conv3.weight": (120, 16, 5, 5), "conv3.bias": (120,),
        "fc1.weight": (84, 120), "fc1.bias": (84,),
        "fc2.weight": (10, 84), "fc2.bias": (10,),
    }


def test_forward_returns_logits_of_the_right_shape():
    torch.manual_seed(0)
    logits = LeNet5()(torch.rand(7, *INPUT_SHAPE))
    assert logits.shape == (7, NUM_CLASSES)
    # logits, not probabilities: rows do not sum to one, and probabilities() makes them
    assert not torch.allclose(logits.sum(1), torch.ones(7))
    torch.testing.assert_close(probabilities(logits).sum(1), torch.ones(7))


def test_fast_formulation_matches_the_plain_notebook_model_forward_and_backward():
    torch.manual_seed(0)
    reference = NotebookLeNet5()
    fast = optimize_layout(LeNet5())
    fast.load_state_dict(reference.state_dict())  # same state_dict layout
    x = torch.rand(16, *INPUT_SHAPE)
    y = torch.randint(0, 10, (16,))
    out_ref, out_fast = reference(x), fast(x)
    torch.testing.assert_close(out_fast, out_ref, atol=1e-5, rtol=1e-5)
    F.cross_entropy(out_ref, y, reduction="sum").backward()
    F.cross_entropy(out_fast, y, reduction="sum").backward()
    for (name, p_ref), p_fast in zip(reference.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_sigmoid_tanh_is_tanh_within_its_bound_values_and_gradients():
    special = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-4, 50.0, -50.0, 1e4, float("inf"), float("-inf")])
    x = torch.cat([torch.linspace(-20, 20, 400_001), special]).requires_grad_()
    y = SigmoidTanh.apply(x)
    exact = torch.tanh(x.detach())
    assert (y.detach() - exact).abs().max().item() <= 2.4e-7
    assert torch.equal(y.detach()[-4:], exact[-4:])  # saturates to exactly +-1
    assert torch.isnan(SigmoidTanh.apply(torch.tensor([float("nan")]))).all()
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, 1 - exact**2, atol=1e-6, rtol=0)
    x64 = torch.randn(30, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SigmoidTanh.apply, (x64,))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_fast_tanh_model_is_the_same_function_on_real_mnist_and_saves_a_plain_model(mnist_data):
    torch.manual_seed(0)
    exact = optimize_layout(LeNet5())
    with torch.no_grad():  # trained-looking weights, so the activations spread over tanh's range
        for p in exact.parameters():
            p.mul_(3)
    fast = optimize_layout(LeNet5(fast_tanh=True))
    fast.load_state_dict(exact.state_dict())
    assert fast.state_dict().keys() == exact.state_dict().keys()  # the flag is not saved
    x, y = mnist_data.test.images[:512], mnist_data.test.labels[:512]
    out_exact, out_fast = exact(x), fast(x)
    assert not torch.equal(out_fast, out_exact)  # really the other formulation
    torch.testing.assert_close(out_fast, out_exact, atol=1e-5, rtol=1e-5)
    assert torch.equal(out_fast.argmax(1), out_exact.argmax(1))
    F.cross_entropy(out_exact, y, reduction="sum").backward()
    F.cross_entropy(out_fast, y, reduction="sum").backward()
    for (name, p_exact), p_fast in zip(exact.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p_fast.grad, p_exact.grad, atol=1e-3, rtol=1e-4, msg=name)
    # a model loaded from saved weights computes torch.tanh, and scripts (TorchScript export)
    plain = LeNet5()
    plain.load_state_dict(fast.state_dict())
    assert not plain.fast_tanh
    torch.testing.assert_close(plain(x), exact(x), atol=1e-5, rtol=1e-5)  # (another memory layout)
    assert torch.equal(torch.jit.script(plain)(x), plain(x))
    assert torch.equal(torch.jit.script(fast)(x), exact(x))  # scripted, the flag falls back to torch.tanh


def _autograd_ops(output):
    """Names of the autograd nodes that produced ``output``."""
    names, todo = set(), [output.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and type(node).__name__ not in names:
            names.add(type(node).__name__)
            todo.extend(next_node for next_node, _ in node.next_functions)
    return names


def test_fast_tanh_runs_sigmoid_tanh_on_cpu_only_when_asked():
    x = torch.rand(4, *INPUT_SHAPE)
    assert "TanhBackward0" in _autograd_ops(LeNet5()(x))
    ops = _autograd_ops(LeNet5(fast_tanh=True)(x))
    assert "SigmoidTanhBackward" in ops and "TanhBackward0" not in ops


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_tanh_is_torch_tanh_on_cuda():
    fast = LeNet5(fast_tanh=True).cuda()
    ops = _autograd_ops(fast(torch.rand(4, *INPUT_SHAPE, device="cuda")))
    assert "TanhBackward0" in ops and "SigmoidTanhBackward" not in ops  # CUDA's own tanh is the fast one


def test_conv3_rejects_a_map_it_does_not_cover():
    with pytest.raises(ValueError, match="exactly the kernel's size"):
        LeNet5().conv3(torch.rand(2, 16, 6, 6))


def test_standardisation_folds_into_conv1_exactly_on_real_mnist(mnist_data):
    from ignite_lenet.model import Standardized, plain_state_dict

    torch.manual_seed(0)
    images = mnist_data.train.images
    wrapped = Standardized(LeNet5(), images.mean().item(), images.std().item())
    with torch.no_grad():  # trained-looking weights: large enough that a wrong fold would show
        for p in wrapped.parameters():
            p.mul_(3)
    folded = LeNet5()
    folded.load_state_dict(wrapped.folded_state_dict())
    assert isinstance(folded, LeNet5) and count_parameters(folded) == 61706
    assert set(plain_state_dict(wrapped)) == set(LeNet5().state_dict())
    x = mnist_data.test.images[:512]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), wrapped(x), atol=1e-5, rtol=0)
        # and back: unfolding a plain model's weights gives the same function on standardised inputs
        again = Standardized(LeNet5(), wrapped.mean.item(), wrapped.std.item())
        again.load_plain_state_dict(folded.state_dict())
        torch.testing.assert_close(again(x), wrapped(x), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="std"):
        Standardized(LeNet5(), 0.1, 0.0)
