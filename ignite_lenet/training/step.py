"""The training step (``TrainStep``) as an Ignite process function, replayed from one CUDA graph on a GPU
(eager elsewhere, the same arithmetic).

An eager CUDA step of LeNet-5 at batch 32 is mostly Python and kernel launches around little GPU work; a replay
launches the whole step (forward, summed cross-entropy, backward, fused Adam) at once::

    optimizer = create_optimizer(model.parameters(), "adam", lr=1e-3, device=device, graphs=True)
    trainer, readout = create_trainer(model, optimizer, batch_size=32)   # engines.py: TrainStep + loss readout

On CUDA every step, eager or replayed, reads the learning rate from a float32 device tensor refreshed from
``param_groups[i]["lr"]`` before the step, so LR schedulers work unchanged (whatever they write, float or
tensor) and the warm-up steps before a capture take the replays' step size, not the Python float's: a resumed
``--deterministic`` run (warm-ups, then replays) is bit-identical to an uninterrupted one. Adam's single-tensor
capturable implementation (``create_optimizer(..., varying_betas=True)``) reads beta1 from such a tensor too,
so ``OneCycleLR``'s momentum cycle, which writes beta1 every step, replays one graph. What the graph bakes in
(beta1 of the fused kernel, beta2, eps, weight decay) is checked before each replay: a change triggers a new
capture (correct, but costly if it happens every step: see ``use_cuda_graphs``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Engine
from torch import nn

# optimizer settings a captured step holds as constants (the learning rate, and beta1 where the optimizer
# takes it as a tensor, are read from device tensors instead)
_BAKED = ("betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach", "fused", "differentiable",
          "decoupled_weight_decay")

# Adam and AdamW take beta1 as a tensor from this torch on (their docs: ``betas (tuple[float | Tensor, ...])``);
# with an older one a schedule that changes beta1 every step trains eagerly on CUDA
TENSOR_BETAS_TORCH = (2, 6)


def graphs_follow_beta1(version: str = torch.__version__) -> bool:
    """Whether a CUDA graph can read Adam's beta1 from a tensor on this torch (``TENSOR_BETAS_TORCH`` or later)."""
    major, minor = (int("".join(c for c in part if c.isdigit()) or 0) for part in version.split(".")[:2])
    return (major, minor) >= TENSOR_BETAS_TORCH


def reads_beta1_from_a_tensor(group: dict[str, Any]) -> bool:
    """Whether this Adam param group's step reads beta1 from a device tensor: the single-tensor, capturable
    implementation (``create_optimizer(..., varying_betas=True)`` on CUDA with graphs).

    The fused kernel takes beta1 as a number (a captured graph holds it constant) and the foreach one turns a
    tensor beta1 into a number (a host sync, refused in a capture); only the single-tensor one computes with it.
    """
    return ("betas" in group and bool(group.get("capturable")) and not group.get("fused")
            and group.get("foreach") is False)


def use_cuda_graphs(requested: bool | None, device: torch.device | str, world_size: int = 1,
                    varying_betas: bool = False) -> bool:
    """Whether training replays a CUDA graph (``--cuda-graphs`` / ``--no-cuda-graphs``; ``None`` is auto).

    Auto means yes on CUDA in a single process. A scheduler that changes Adam's beta1 every step
    (``varying_betas``: ``OneCycleLR`` with its default momentum cycle) needs an optimizer whose graph reads beta1
    from a tensor (``create_optimizer(..., varying_betas=True)``), which needs torch >= 2.6
    (``graphs_follow_beta1``); with an older torch such runs train eagerly. CPU ignores the flag. Asking for
    graphs where they cannot work is a ``ValueError``.
    """
    if torch.device(device).type != "cuda" or requested is False:
        return False
    if world_size > 1:
        if requested:
            raise ValueError("--cuda-graphs: not in data-parallel runs (DDP's gradient all-reduce is not captured); "
                             "use --no-cuda-graphs")
        return False
    if varying_betas and not graphs_follow_beta1():
        if requested:
            raise ValueError(f"--cuda-graphs: --schedule onecycle changes Adam's beta1 every step, which a captured "
                             f"step reads from a tensor only with torch >= 2.6 (this is {torch.__version__}); "
                             f"use --no-cuda-graphs")
        return False
    return True


class TrainStep:
    """Ignite process function ``(engine, (x, y)) -> per-sample loss`` of one training step; a CUDA graph on GPUs.

    The batch ``(x, y)`` is already on the model's device: ``x`` ``(n, 1, 32, 32)`` float32, ``y`` ``(n,)``
    int64, ``n <= batch_size``. The step minimises the summed cross-entropy (the notebook's
    ``reduction="sum"``), written as per-sample losses times weights, summed: a short last batch is padded to
    ``batch_size`` with zero-weight samples, so its loss and gradients are those of its real samples.

    With ``use_graph`` the first ``warmup_steps`` steps run eagerly on a side stream (real training steps, as
    PyTorch's CUDA-graph notes require before capture), the next one captures the step into static buffers
    and every later one copies the batch in and replays. On CUDA, eager steps and replays alike read the
    learning rate (and beta1, for an optimizer that ``reads_beta1_from_a_tensor``) from float32 device tensors
    that hold ``param_groups``' values: the same arithmetic either way. ``optimizer.load_state_dict`` (a
    resume) replaces the optimizer's state tensors, so it drops the graph (a hook calls ``reset``) and the step
    captures again; ``model.load_state_dict`` copies into the same tensors and needs nothing. Evaluating the
    model between epochs is fine: the step puts it back in train mode. Replays do not call
    ``optimizer.step()``, so optimizer step hooks do not run.

    The returned loss is a 0-d tensor on the device, the same tensor every step (valid until the next step;
    ``.clone()`` to keep it): reading it (``.item()``, ``TerminateOnNan``, a progress bar) waits for the GPU,
    so read the running window instead (``take_loss_window``, ``attach_loss_readout``) every N steps.

    Args:
        model: the model, its parameters on one device.
        optimizer: Adam or AdamW over the model's parameters; fused or ``capturable=True`` for graphs
            (``create_optimizer(..., graphs=True)``; with ``varying_betas=True`` the graph follows beta1).
        batch_size: the size of the static batch (the training batch size).
        label_smoothing: passed to ``F.cross_entropy``.
        use_graph: ``None`` means on CUDA devices; ``True`` needs CUDA.
        warmup_steps: eager steps before each capture.
        pad_short_batches: run a short batch padded to ``batch_size`` (the graph's arithmetic) also when eager;
            ``None`` means only with graphs. Eager steps on the short batch itself keep the notebook recipe's
            results bit-identical on CPU (a 24-row and a 32-row GEMM may round differently).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch_size: int, *,
                 label_smoothing: float = 0.0, use_graph: bool | None = None, warmup_steps: int = 3,
                 pad_short_batches: bool | None = None) -> None:
        params = list(model.parameters())
        if not params:
            raise ValueError("TrainStep: the model has no parameters")
        self.device = params[0].device
        if any(p.device != self.device for p in params):
            raise ValueError("TrainStep: the model's parameters must all be on one device")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be between 0 and 1, got {label_smoothing!r}")
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be at least 1, got {warmup_steps!r}")
        if use_graph is None:
            use_graph = self.device.type == "cuda"
        if use_graph and self.device.type != "cuda":
            raise ValueError(f"TrainStep: CUDA graphs need the model on a CUDA device, not {self.device}")
        if use_graph and not all(g.get("fused") or g.get("capturable") for g in optimizer.param_groups):
            raise ValueError("TrainStep: the optimizer cannot be captured in a CUDA graph; create it with "
                             "fused=True or capturable=True (create_optimizer(..., graphs=True))")
        self.model, self.optimizer = model, optimizer
        self.batch_size, self.label_smoothing = batch_size, float(label_smoothing)
        self.use_graph, self.warmup_steps = use_graph, warmup_steps
        self.pad_short_batches = use_graph if pad_short_batches is None else pad_short_batches
        self.captures = 0  # how many graphs were captured (a resume or a changed beta captures again)
        # static batch, allocated on the first batch (its image shape and memory layout); _real rows count
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._w = torch.ones(batch_size, device=self.device)  # (B,) 1 for real samples, 0 for padding
        self._ones = torch.ones(batch_size, device=self.device)  # the weights of a full batch, eager path
        self._real = batch_size
        self._loss = torch.zeros((), device=self.device)  # per-sample loss of the last batch
        self._window = torch.zeros((), device=self.device)  # summed loss since the last take_loss_window()
        self._window_samples = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._stream: torch.cuda.Stream | None = None
        # CUDA steps read lr (and beta1) from these (one per param group); CPU steps the param groups' floats
        groups = optimizer.param_groups
        self._device_values = self.device.type == "cuda" and all(g.get("fused") or g.get("capturable") for g in groups)
        self._device_beta1 = self._device_values and all(reads_beta1_from_a_tensor(g) for g in groups)
        self._lrs = [self._device_scalar(g["lr"]) for g in groups] if self._device_values else []
        self._beta1s = [self._device_scalar(g["betas"][0]) for g in groups] if self._device_beta1 else []
        self._seen = [[float(g["lr"]), float(g["betas"][0]) if self._device_beta1 else None] for g in groups]
        self._baked: list[tuple[Any, ...]] = []
        self._eager_left = warmup_steps
        self._warned = False
        self._hook = optimizer.register_load_state_dict_post_hook(lambda _: self.reset())

    @property
    def graphed(self) -> bool:
        """True while a captured graph is replayed."""
        return self._graph is not None

    def reset(self) -> None:
        """Drop the captured graph; the next steps warm up and capture again (after the optimizer's state changed)."""
        if self._graph is not None:
            torch.cuda.synchronize(self.device)  # the last replay is done before its memory is released
            self._graph = None
        self._eager_left = self.warmup_steps

    def take_loss_window(self) -> tuple[torch.Tensor, int]:
        """The summed training loss since the last call (a device tensor) and its number of samples."""
        total = self._window.clone()
        self._window.zero_()
        samples, self._window_samples = self._window_samples, 0
        return total, samples

    def __call__(self, engine: Engine | None, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        x, y = batch[0], batch[1]
        n = x.shape[0]
        if not 0 < n <= self.batch_size or y.shape != (n,):
            raise ValueError(f"TrainStep: expected a batch of 1 to {self.batch_size} images with one label "
                             f"each, got images {tuple(x.shape)} and labels {tuple(y.shape)}")
        if not self.model.training:  # the evaluators switch it to eval mode between epochs
            self.model.train()
        if not self.use_graph:
            if n == self.batch_size or not self.pad_short_batches:  # no copy into the static batch
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                self._eager(x, y, self._ones[:n])
            else:
                self._load(x, y)
                self._eager(self._x, self._y, self._w)
        else:
            self._load(x, y)
            if self._graph is not None:
                self._replay()
            elif self._eager_left > 0:
                self._eager_left -= 1
                self._warm_up()
            else:
                self._capture()
                self._replay()
        self._window_samples += n
        if engine is not None and self.device.type == "cuda":
            state = engine.state
            if state.epoch_length and state.iteration % state.epoch_length == 0:
                # the epoch's last step: wait for the GPU, so Ignite's epoch time holds the epoch's GPU work
                # (the CPU runs ahead of the GPU by up to the steps between two loss readouts)
                torch.cuda.current_stream(self.device).synchronize()
        return self._loss

    # -- the step's arithmetic, shared by every path

    def _compute(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
        """Forward, weighted summed cross-entropy, backward and optimizer step; the loss goes to the static outputs."""
        logits = self.model(x)  # (B, 10)
        per_sample = F.cross_entropy(logits, y, reduction="none", label_smoothing=self.label_smoothing)  # (B,)
        loss = (per_sample * w).sum()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self._window.add_(loss)
            torch.div(loss, w.sum(), out=self._loss)

    def _eager(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if not self._device_values:  # CPU: the param groups' floats, as the notebook's step
            self._compute(x, y, w)
            return
        self._refresh()
        with self._reading_device_values():
            self._compute(x, y, w)

    # -- the device tensors CUDA steps read the learning rate (and beta1) from

    def _device_scalar(self, value: float | torch.Tensor) -> torch.Tensor:
        """A float32 0-d tensor on the device holding ``value`` (a fill, no copy from the host)."""
        return torch.full((), float(value), dtype=torch.float32, device=self.device)

    def _refresh(self) -> None:
        """Copy what the schedulers wrote into ``param_groups`` to the device tensors: a fill per change, no sync."""
        for i, group in enumerate(self.optimizer.param_groups):
            targets = [(0, group["lr"], self._lrs[i])]
            if self._device_beta1:
                targets.append((1, group["betas"][0], self._beta1s[i]))
            for k, value, target in targets:
                if isinstance(value, torch.Tensor):
                    target.copy_(value, non_blocking=True)
                elif value != self._seen[i][k]:
                    target.fill_(value)
                    self._seen[i][k] = value

    @contextmanager
    def _reading_device_values(self) -> Iterator[None]:
        """Inside the block ``param_groups`` hold the device tensors (a step run or captured reads them); the
        schedulers' values are back after it."""
        groups = self.optimizer.param_groups
        saved = [(g["lr"], g.get("betas")) for g in groups]
        try:
            for i, group in enumerate(groups):
                group["lr"] = self._lrs[i]
                if self._device_beta1:
                    group["betas"] = (self._beta1s[i], *group["betas"][1:])
            yield
        finally:
            for group, (lr, betas) in zip(groups, saved):
                group["lr"] = lr
                if betas is not None:
                    group["betas"] = betas

    # -- static buffers and the graph

    def _load(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Copy the batch into the static buffers; pad a short batch with zero-weight, all-zero samples."""
        n = x.shape[0]
        if self._x is None or self._y is None:
            layout = (torch.channels_last if x.dim() == 4 and not x.is_contiguous()
                      and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
            self._x = torch.zeros((self.batch_size, *x.shape[1:]), dtype=x.dtype, device=self.device).contiguous(
                memory_format=layout)
            self._y = torch.zeros(self.batch_size, dtype=y.dtype, device=self.device)
        static_x, static_y = self._x, self._y
        if x.shape[1:] != static_x.shape[1:] or x.dtype != static_x.dtype or y.dtype != static_y.dtype:
            raise ValueError(f"TrainStep: batches must keep one shape and dtype: images "
                             f"{tuple(static_x.shape[1:])} {static_x.dtype}, labels {static_y.dtype}; got "
                             f"{tuple(x.shape[1:])} {x.dtype}, {y.dtype}")
        static_x[:n].copy_(x, non_blocking=True)
        static_y[:n].copy_(y, non_blocking=True)
        if n != self._real:
            static_x[n:].zero_()  # padding must be finite: 0 * NaN would still be NaN
            static_y[n:].zero_()
            self._w[:n].fill_(1.0)
            self._w[n:].fill_(0.0)
            self._real = n

    def _warm_up(self) -> None:
        """One eager training step on a side stream (on the static buffers), as before a capture."""
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        main = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(main)
        with torch.cuda.stream(self._stream), warnings.catch_warnings():
            # torch warns that a capturable optimizer runs uncaptured: these steps precede the capture
            warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")
            self._eager(self._x, self._y, self._w)
        main.wait_stream(self._stream)

    def _hyperparameters(self) -> list[tuple[Any, ...]]:
        """What the graph holds constant, per param group (beta1 only where it is not read from a tensor)."""
        baked = []
        for group in self.optimizer.param_groups:
            values = {key: group.get(key) for key in _BAKED}
            if self._device_beta1:
                values["betas"] = tuple(group["betas"][1:])
            baked.append(tuple(values.values()))
        return baked

    def _capture(self) -> None:
        groups = self.optimizer.param_groups
        for group in groups:
            if any(isinstance(b, torch.Tensor) for b in group["betas"]):
                raise ValueError("TrainStep: tensor betas are not supported; use floats")
            if group.get("fused"):  # (__init__ refused an optimizer neither fused nor capturable)
                group["capturable"] = True  # the fused kernel is graph-safe either way; step() checks the flag
        self._refresh()
        self.optimizer.zero_grad(set_to_none=True)  # backward in the graph allocates the gradients from its pool
        graph = torch.cuda.CUDAGraph()
        with self._reading_device_values(), torch.cuda.graph(graph):  # captured: replays read these tensors
            self._compute(self._x, self._y, self._w)
        self._graph = graph
        self._baked = self._hyperparameters()
        self.captures += 1

    def _replay(self) -> None:
        assert self._graph is not None
        self._refresh()
        if self._hyperparameters() != self._baked:
            if not self._warned:
                warnings.warn("TrainStep: an optimizer setting held constant by the CUDA graph (betas, eps, "
                              "weight decay) changed; capturing the step again", stacklevel=3)
                self._warned = True
            torch.cuda.synchronize(self.device)
            self._graph = None
            self._capture()
        self._graph.replay()
