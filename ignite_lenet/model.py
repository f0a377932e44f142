"""LeNet-5 exactly as the original notebook builds it (61,706 parameters); ``forward`` returns logits.

The notebook applied softmax inside the model and then ``CrossEntropyLoss`` (which applies log-softmax
again): a double softmax that flattens the gradients and costs accuracy. Here the loss sees logits; probabilities are an explicit step (``probabilities``, or the
``--output probabilities`` export option).
"""

# No ``from __future__ import annotations`` here: TorchScript reads the real annotations of the
# ``@torch.jit.unused`` method below, and string annotations make it fail to resolve ``torch.Tensor``.
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ignite_lenet.spec import INPUT_SHAPE, NUM_CLASSES


class WholeInputConv2d(nn.Conv2d):
    """A convolution whose kernel covers its whole input (LeNet-5's C5: 5x5 kernel on a 5x5 map), computed
    exactly as what it is, one matrix product over the flattened input: ``(B, C, k, k) -> (B, out_channels)``.

    The parameters are ``nn.Conv2d``'s (weight ``(out, C, k, k)``), so state_dicts match a plain convolution.
    The flattening follows the memory order of ``channels_last`` activations (H, W, C) and the weight is
    permuted to match, so no copy of the activations is needed.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != self.kernel_size[0] or x.shape[-1] != self.kernel_size[1]:
            raise ValueError("WholeInputConv2d: the input map must be exactly the kernel's size")
        weight = self.weight.permute(0, 2, 3, 1).flatten(1)  # (out, k*k*C) in (H, W, C) order
        return F.linear(x.permute(0, 2, 3, 1).flatten(1), weight, self.bias)


class SigmoidTanh(torch.autograd.Function):
    """``tanh(x)`` computed as ``2 * sigmoid(2x) - 1``, with tanh's own backward from the output, ``g * (1 - y**2)``.

    The same function in exact arithmetic; in float32 it stays within 2.4e-7 (absolute) of ``torch.tanh`` (measured: 1.8e-7).
    It exists for speed: torch's CPU ``tanh`` kernel is several times slower than its ``sigmoid``, which made
    tanh one of the largest costs of a LeNet-5 training step on CPU (figures: ``benchmarks/results/NOTES.md``).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = torch.mul(x, 2).sigmoid_().mul_(2).sub_(1)  # one new tensor, in x's memory format
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)  # the kernel torch.tanh's autograd uses


class LeNet5(nn.Module):
    """conv 1->6->16->120 (5x5, tanh, 2x2 average pooling after the first two), fc 120->84->10.

    The layers and their parameters are the notebook's, state_dicts included (``conv3.weight`` is
    ``(120, 16, 5, 5)``). ``conv3`` runs as the matrix product it is (``WholeInputConv2d``), and
    ``optimize_layout`` puts the model in ``channels_last``: both exact, both faster on CPU.

    Args:
        fast_tanh: on CPU, compute tanh as ``SigmoidTanh`` (within 2.4e-7 absolute of ``torch.tanh``, faster there);
            set while training with ``--fast-tanh``. The flag is not part of the state_dict: a model loaded from
            a checkpoint or exported uses ``torch.tanh``.
    """

    def __init__(self, fast_tanh: bool = False) -> None:
        super().__init__()
        self.fast_tanh = bool(fast_tanh)
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.conv3 = WholeInputConv2d(16, 120, kernel_size=5)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 32, 32)
        x = F.avg_pool2d(self._tanh(self.conv1(x)), 2)  # (B, 6, 14, 14)
        x = F.avg_pool2d(self._tanh(self.conv2(x)), 2)  # (B, 16, 5, 5)
        x = self._tanh(self.conv3(x))  # (B, 120)
        x = self._tanh(self.fc1(x))  # (B, 84)
        return self.fc2(x)  # (B, 10) logits

    def _tanh(self, x: torch.Tensor) -> torch.Tensor:
        # CUDA's tanh is fast (one kernel beats four there); a scripted model runs torch.tanh
        if self.fast_tanh and not torch.jit.is_scripting() and x.device.type == "cpu":
            return self._sigmoid_tanh(x)
        return torch.tanh(x)

    @torch.jit.unused  # TorchScript cannot compile an autograd.Function; scripted models use torch.tanh
    def _sigmoid_tanh(self, x: torch.Tensor) -> torch.Tensor:
        return SigmoidTanh.apply(x)


def optimize_layout(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """The faster memory layout for ``device``; the math is unchanged.

    ``channels_last`` on CPU (oneDNN's convolutions prefer it); on CUDA the default NCHW, which measured
    measured faster for LeNet-5's small convolutions on an H200 (``benchmarks/results/NOTES.md``).
    """
    if device is not None and torch.device(device).type == "cuda":
        return model.to(memory_format=torch.contiguous_format)
    return model.to(memory_format=torch.channels_last)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities from logits (softmax over the last dimension)."""
    return torch.softmax(logits, dim=-1)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (LeNet5: 61,706)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Standardized(nn.Module):
    """``model`` on standardised inputs, ``(x - mean) / std``, for training with ``--normalize``.

    ``folded_state_dict()`` is the plain ``LeNet5`` state_dict that computes the same function on raw [0, 1]
    inputs, with the standardisation folded into ``conv1`` (exact: ``conv1`` has no padding, so every output sees 25 real
    inputs): that is what checkpoints and exports hold, so they keep 61,706 parameters and raw inputs.
    """

    def __init__(self, model: LeNet5, mean: float, std: float) -> None:
        super().__init__()
        if not (std > 0 and torch.isfinite(torch.tensor([mean, std])).all()):
            raise ValueError(f"Standardized: std must be positive and both finite, got mean {mean}, std {std}")
        self.model = model
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 32, 32) in [0, 1]
        return self.model((x - self.mean) / self.std)

    def folded_state_dict(self) -> dict[str, torch.Tensor]:
        """``LeNet5`` state_dict with the standardisation folded into conv1 (computed in float64)."""
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        weight, bias = state["conv1.weight"].double(), state["conv1.bias"].double()
        mean, std = self.mean.double(), self.std.double()
        # conv1((x - m) / s) = (W / s) * x + (b - (m / s) * sum(W))
        state["conv1.weight"] = (weight / std).to(state["conv1.weight"].dtype)
        state["conv1.bias"] = (bias - mean / std * weight.sum(dim=(1, 2, 3))).to(state["conv1.bias"].dtype)
        return state

    def load_plain_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a plain ``LeNet5`` state_dict (raw inputs), unfolding conv1 for standardised inputs: the
        inverse of ``folded_state_dict``, so fine-tuning starts from the same function."""
        state = {k: v.detach().clone() for k, v in state.items()}
        weight, bias = state["conv1.weight"].double(), state["conv1.bias"].double()
        mean, std = self.mean.double(), self.std.double()
        state["conv1.weight"] = (weight * std).to(state["conv1.weight"].dtype)
        state["conv1.bias"] = (bias + mean * weight.sum(dim=(1, 2, 3))).to(state["conv1.bias"].dtype)
        self.model.load_state_dict(state)


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ``LeNet5`` state_dict of ``model``: unwrapped from DDP, standardisation folded in."""
    model = getattr(model, "module", model)  # DistributedDataParallel / DataParallel
    if isinstance(model, Standardized):
        return model.folded_state_dict()
    return model.state_dict()


def model_summary() -> str:
    """The notebook's torchsummary table of ``LeNet5``, from torchinfo (the training extra)."""
    from torchinfo import summary
    from torchinfo.enums import Units

    text = str(summary(LeNet5(), input_size=(1, *INPUT_SHAPE), verbose=0, col_names=("output_size", "num_params")))
    for unit in Units:  # torchinfo prints "(Units.MEGABYTES)" under Python >= 3.11's enum formatting: show "(M)"
        text = text.replace(f"({unit})", f"({unit.value})")
    return text
