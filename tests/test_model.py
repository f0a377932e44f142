import pytest
import torch
import torch.nn.functional as F

from ignite_lenet.reference import NotebookLeNet5
from ignite_lenet.model import INPUT_SHAPE, NUM_CLASSES, LeNet5, count_parameters, optimize_layout, probabilities


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
    folded = wrapped.folded()
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
