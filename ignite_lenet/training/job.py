"""One training job, the Python API: build it from a ``TrainConfig``, attach your own handlers, run it, get objects
back.

    from ignite_lenet import TrainConfig, build_training, train

    result = train(epochs=3, data_dir="../shared/datasets")      # TrainResult: .model .history .metrics .plot()

    training = build_training(TrainConfig(epochs=3, data_dir="../shared/datasets"))
    @training.trainer.on(Events.EPOCH_COMPLETED)
    def my_handler(engine): ...
    result = training.run()

``python -m ignite_lenet.train`` is ``train(cfg)`` plus argument parsing and one-line errors.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import ignite
import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.utils import setup_logger
from matplotlib.figure import Figure
from torch import nn

from ignite_lenet.checkpoints import best_model_from, load_best_model
from ignite_lenet.config import TrainConfig
from ignite_lenet.files import WriteError, check_output_dir, make_dirs, read_json, write_json
from ignite_lenet.mnist.idx import ensure_mnist
from ignite_lenet.model import LeNet5, Standardized, count_parameters, model_summary, optimize_layout
from ignite_lenet.plots import curves_figure, plot_confusion_matrix
from ignite_lenet.spec import (
    BEST_MODEL,
    CONFIG,
    CONFUSION_MATRIX,
    HISTORY,
    METRICS,
    TRAINING_CHECKPOINT,
)
from ignite_lenet.training.augment import ElasticDistortion, RandomAffine
from ignite_lenet.training.data import InMemoryLoader, MNISTData, load_data
from ignite_lenet.training.devices import check_cublas_workspace, configure_determinism, resolve_device
from ignite_lenet.training.distributed import checkpoint_from_rank0, data_parallel, launch, on_rank0, requested
from ignite_lenet.training.engines import Engines, create_ema, create_evaluator, create_trainer, quiet_reported_errors
from ignite_lenet.training.optim import create_optimizer
from ignite_lenet.training.resume import initial_weights, load_resumable, restore
from ignite_lenet.training.rundir import RunDirLock, claim_run_dir, remove_earlier_run, saying_what_next
from ignite_lenet.training.state import History
from ignite_lenet.training.step import use_cuda_graphs
from ignite_lenet.training.wiring import Attached, attach_handlers

EMA_WARMUP_EPOCHS = 1  # the EMA's momentum warms up over the first epoch's iterations


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite (``TerminateOnNan`` stopped the trainer)."""


@dataclass
class TrainResult:
    """What a run produced: the best model (``LeNet5``, eval mode, CPU), the history and final metrics (as in
    ``history.json`` and ``metrics.json``) and the run directory."""

    model: LeNet5
    history: dict[str, Any]
    metrics: dict[str, Any]
    output_dir: Path
    best: dict[str, Any] = field(default_factory=dict)  # epoch, val_loss, val_accuracy (and weights) of best_model.pt

    def plot(self) -> Figure:
        """The learning curves as a ``matplotlib.figure.Figure`` (shown inline when it ends a Jupyter cell)."""
        return curves_figure(self.history, self.best.get("epoch"))

    @classmethod
    def from_dir(cls, output_dir: str | Path) -> TrainResult:
        """Read a finished run back from its directory."""
        output_dir = Path(output_dir)
        model, best = load_best_model(output_dir / BEST_MODEL)
        return cls(model=model, history=read_json(output_dir / HISTORY),
                   metrics=read_json(output_dir / METRICS), output_dir=output_dir,
                   best=_best_summary(best))


def _best_summary(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A best-model checkpoint's plain fields (epoch, val_loss, val_accuracy, weights): all but weights and config."""
    return {k: v for k, v in checkpoint.items() if k not in ("model", "config")}


@dataclass
class Training:
    """Everything a run is made of, built and wired but not started (``build_training``); ``run()`` starts it.

    Attach your own Ignite handlers to ``trainer`` or the evaluators before calling ``run()``; they fire after
    the built-in ones of the same event.
    """

    cfg: TrainConfig
    device: torch.device
    output_dir: Path
    data: MNISTData
    loaders: dict[str, InMemoryLoader]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    engines: Engines
    attached: Attached
    logger: logging.Logger
    started: float
    determinism: ExitStack = field(default_factory=ExitStack)  # --deterministic's settings, restored by run()
    lock: RunDirLock | None = None  # the run directory's, held from build_training to the end of run() (rank 0)

    @property
    def trainer(self) -> Engine:
        return self.engines.trainer

    @property
    def train_evaluator(self) -> Engine:
        return self.engines.train_evaluator

    @property
    def val_evaluator(self) -> Engine:
        return self.engines.val_evaluator

    @property
    def history(self) -> History:
        return self.attached.history

    def run(self) -> TrainResult:
        """Train for ``cfg.epochs`` epochs (or what remains after a resume), then test the best model once.

        However it ends, torch's global flags are restored and the run directory is released; a file that cannot
        be written ends it with a ``WriteError`` saying what survived and what to do next.
        """
        engines = self.engines
        with self.determinism, self._holding_run_dir(), quiet_reported_errors(
                (engines.trainer, engines.train_evaluator, engines.val_evaluator, engines.ema_evaluator)):
            self._run_epochs()
            return self._test_best()

    def close(self) -> None:
        """Release the run directory and restore torch's flags without running (``run()`` does both itself)."""
        if self.lock is not None:
            self.lock.release()
        self.determinism.close()

    @contextmanager
    def _holding_run_dir(self) -> Iterator[None]:
        if self.lock is not None:
            self.lock.acquire()  # held since build_training; taken again by a second run()
        try:
            with saying_what_next(self.output_dir):
                yield
        finally:
            if self.lock is not None:
                self.lock.release()

    def _run_epochs(self) -> None:
        cfg, trainer, history = self.cfg, self.trainer, self.history
        if trainer.state.epoch >= cfg.epochs and trainer.state.epoch > 0:
            self.logger.info(f"already trained for {trainer.state.epoch} epochs; pass a larger --epochs to continue")
        else:
            trainer.run(self.loaders["train"], max_epochs=cfg.epochs, epoch_length=len(self.loaders["train"]))
        output = self.engines.readout.value
        if output is not None and not math.isfinite(output):
            kept = (f"best_model.pt of epoch {history.best_epoch()} is kept in {self.output_dir}" if history.epochs
                    else "no epoch completed")
            raise TrainingDiverged(
                f"training stopped at epoch {trainer.state.epoch}, iteration {trainer.state.iteration}: the loss "
                f"became {output}; lower --lr ({kept})"
            )

    def _test_best(self) -> TrainResult:
        """The test set, once, with the best epoch's weights; ``metrics.json`` and the confusion matrix."""
        training_time = time.perf_counter() - self.started
        path = self.output_dir / BEST_MODEL  # rank 0's: the other ranks need not see its disk
        best_model, best_info = best_model_from(checkpoint_from_rank0(path, self.device), path, self.device)
        tester = create_evaluator(optimize_layout(best_model, self.device), self.device, confusion_matrix=True)
        metrics = tester.run(self.loaders["test"]).metrics
        result = self._metrics(metrics, best_info, training_time)
        if idist.get_rank() == 0:
            write_json(self.output_dir / METRICS, result)
            plot_confusion_matrix(metrics["confusion_matrix"], self.output_dir / CONFUSION_MATRIX,
                                  title=f"MNIST test set, best epoch {result['best_epoch']}: "
                                        f"{100 * result['test_accuracy']:.2f}% accuracy")
            self.logger.info(
                f"test accuracy {100 * result['test_accuracy']:.2f}%  test loss {result['test_loss']:.4f}  "
                f"(best epoch {result['best_epoch']}{', EMA weights' if best_info.get('weights') == 'ema' else ''})  "
                f"{result['train_images_per_s']:,.0f} training images/s  {training_time:.0f}s in all; "
                f"artifacts in {self.output_dir}"
            )
        idist.barrier()  # every rank leaves together: none tears down the process group while rank 0 still writes
        return TrainResult(model=best_model.cpu().eval(), history=self.history.to_dict(), metrics=result,
                           output_dir=self.output_dir, best=_best_summary(best_info))

    def _metrics(self, test: dict[str, Any], best_info: dict[str, Any], training_time: float) -> dict[str, Any]:
        """``metrics.json``: the test metrics of the best weights, which epoch they are, and the run's speed."""
        times, train_loader = self.history.data["epoch_time_s"], self.loaders["train"]
        world_size = idist.get_world_size()
        images_per_epoch = min(len(train_loader) * self.cfg.batch_size, train_loader.shard_size()) * world_size
        result = {
            "test_loss": float(test["loss"]),
            "test_accuracy": float(test["accuracy"]),
            "best_epoch": int(best_info["epoch"]),
            "best_val_loss": float(best_info["val_loss"]),
            "best_val_accuracy": float(best_info["val_accuracy"]),
            "epochs_run": self.history.epochs,
            "total_time_s": training_time,
            "train_time_s": float(sum(times)),
            "train_images_per_s": images_per_epoch * len(times) / sum(times) if times else 0.0,
            "device": str(self.device),
            "world_size": world_size,
            "torch": torch.__version__,
            "ignite": ignite.__version__,
        }
        if "weights" in best_info:
            result["best_weights"] = best_info["weights"]
        return result


def build_training(cfg: TrainConfig, claim: bool = True) -> Training:
    """Build data, model, optimizer, loaders, trainer, evaluators and handlers for ``cfg`` (and restore them
    when ``cfg.resume``); nothing runs until ``Training.run()``.

    The run directory is claimed first (``rundir.claim_run_dir``, by rank 0 of a data-parallel job): locked for
    this process until ``run()`` ends (or ``close()``), and refused when another live process holds it or when a
    fresh run would write over an earlier run's files (``cfg.overwrite`` removes them, ``cfg.resume`` continues
    them). ``claim=False`` is for processes whose launcher holds the directory for them.
    """
    logger = _logger(idist.get_rank())
    determinism = ExitStack()  # entered before any CUDA work (cuBLAS reads its workspace setting once)
    determinism.enter_context(configure_determinism(cfg.deterministic))
    lock = None
    try:
        if claim:  # phase 1 begins here: no one else writes the directory from now on, nor reads it half-written
            output_dir = check_output_dir(cfg.output_dir)
            lock = on_rank0(lambda: claim_run_dir(output_dir, resume=cfg.resume, overwrite=cfg.overwrite))
        return _build(cfg, logger, determinism, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        determinism.close()
        raise


def _build(cfg: TrainConfig, logger: logging.Logger, determinism: ExitStack, lock: RunDirLock | None) -> Training:
    """The phases of a run, in this order (as Ignite's cifar10 example reads)."""
    # 1. the run directory (claimed by build_training), the device, and what to start from: before any data is read
    output_dir = check_output_dir(cfg.output_dir)
    device = resolve_device(cfg.device)
    if cfg.deterministic:
        check_cublas_workspace(device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    resume_from = load_resumable(cfg, output_dir / TRAINING_CHECKPOINT, device) if cfg.resume else None
    initial = initial_weights(cfg.init_from) if cfg.init_from is not None else None  # may be the earlier run's
    started = time.perf_counter()
    # 2. data, 3. model and optimizer, 4. engines
    data, loaders = setup_data(cfg, device)
    model, optimizer, cuda_graphs = setup_model(cfg, device, data, initial)
    engines = create_engines(cfg, model, optimizer, device, cuda_graphs, len(loaders["train"]))
    # --overwrite: the earlier run's files go after every check above and before the first write (TensorBoard's
    # event file, in 5)
    removed = on_rank0(lambda: remove_earlier_run(output_dir)) if cfg.overwrite else None
    if removed:
        logger.info(f"--overwrite: removed the earlier run's {', '.join(removed)} from {output_dir}")
    # 5. handlers, 6. the checkpoint to resume
    attached = attach_handlers(cfg, engines, loaders, model, optimizer, output_dir, logger)
    if resume_from is not None:  # before anything is written, so a checkpoint that does not fit changes nothing
        restore(attached.to_save, resume_from, output_dir / TRAINING_CHECKPOINT)
    # 7. the run directory's first file and the first lines on the screen
    if idist.get_rank() == 0:
        with saying_what_next(output_dir):
            make_dirs(output_dir)
            write_json(output_dir / CONFIG, cfg.to_dict())
        logger.info(
            f"LeNet-5 ({count_parameters(model):,} parameters) on {device}, {idist.get_world_size()} process(es); "
            f"recipe {cfg.recipe}; train {len(data.train):,} / val {len(data.val):,} ({cfg.val_source}) / test "
            f"{len(data.test):,} images; torch {torch.__version__}, ignite {ignite.__version__}"
        )
        logger.info(model_summary())
    if resume_from is not None:
        logger.info(f"resumed from {output_dir / TRAINING_CHECKPOINT} at epoch {engines.trainer.state.epoch}")
    return Training(cfg=cfg, device=device, output_dir=output_dir, data=data, loaders=loaders, model=model,
                    optimizer=optimizer, engines=engines, attached=attached, logger=logger, started=started,
                    determinism=determinism, lock=lock)


class _StdoutHandler(logging.StreamHandler):
    """The run's log on standard output: a line that cannot be written there (a full disk behind a redirect, a
    closed pipe) ends the run with a one-line ``WriteError``, not with logging's traceback on stderr per line."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            raise WriteError.of(error, "standard output") from None
        super().handleError(record)


def _logger(rank: int) -> logging.Logger:
    # reset: setup_logger keeps a logger that exists already unconfigured, and importing a child logger (the
    # serving package's "ignite_lenet.serving") makes "ignite_lenet" exist: the run's log would then vanish
    logger = setup_logger("ignite_lenet", format="%(message)s", distributed_rank=rank, stream=sys.stdout, reset=True)
    for handler in list(logger.handlers):  # setup_logger keeps its first call's stream: follow today's sys.stdout
        if type(handler) is logging.StreamHandler:  # (a redirect, a notebook cell, a test's capture)
            ours = _StdoutHandler(sys.stdout)
            ours.setLevel(handler.level)
            ours.setFormatter(handler.formatter)
            logger.removeHandler(handler)
            logger.addHandler(ours)
        elif isinstance(handler, _StdoutHandler):
            handler.stream = sys.stdout
    return logger


def setup_data(cfg: TrainConfig, device: torch.device) -> tuple[MNISTData, dict[str, InMemoryLoader]]:
    """MNIST's splits on ``device`` and this process's loaders (its shard in a data-parallel run)."""
    with idist.one_rank_first(local=True):  # one download per machine, not one per process
        ensure_mnist(cfg.data_dir, cfg.download)
    data = load_data(cfg.data_dir, cfg.download, cfg.val_source, cfg.val_size, cfg.train_eval_size).to(device)
    epoch_length = 1 if cfg.sanity_check else cfg.epoch_length
    eval_batches = 1 if cfg.sanity_check else None
    shard = {"rank": idist.get_rank(), "world_size": idist.get_world_size()}
    augment = RandomAffine(elastic=ElasticDistortion() if cfg.elastic else None) if cfg.augment else None
    loaders = {
        "train": InMemoryLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, max_batches=epoch_length,
                                augment=augment, **shard),
        "train_eval": InMemoryLoader(data.train_eval, cfg.eval_batch_size, max_batches=eval_batches, pad=False,
                                     **shard),
        "val": InMemoryLoader(data.val, cfg.eval_batch_size, max_batches=eval_batches, pad=False, **shard),
        "test": InMemoryLoader(data.test, cfg.eval_batch_size, pad=False, **shard),
    }
    return data, loaders


def setup_model(cfg: TrainConfig, device: torch.device, data: MNISTData, initial: LeNet5 | None
                ) -> tuple[nn.Module, torch.optim.Optimizer, bool]:
    """The seeded model (standardised with ``--normalize``, from ``--init-from``'s weights), wrapped for
    data-parallel runs; its optimizer; whether the step replays a CUDA graph."""
    torch.manual_seed(cfg.seed)
    net: nn.Module = optimize_layout(LeNet5(fast_tanh=cfg.fast_tanh), device)
    if cfg.normalize:  # statistics of the training split, the same on every rank
        net = Standardized(net, data.train.images.mean().item(), data.train.images.std().item())
    if initial is not None:
        if isinstance(net, Standardized):
            net.load_plain_state_dict(initial.state_dict())
        else:
            net.load_state_dict(initial.state_dict())
    model = data_parallel(net, device)
    varying_betas = cfg.schedule == "onecycle"  # OneCycleLR cycles Adam's beta1 every step
    cuda_graphs = use_cuda_graphs(cfg.cuda_graphs, device, idist.get_world_size(), varying_betas)
    optimizer = create_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay, device, cuda_graphs,
                                 varying_betas)
    return model, optimizer, cuda_graphs


def create_engines(cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                   cuda_graphs: bool, epoch_length: int) -> Engines:
    """The trainer (``engines.create_trainer``, as the training benchmark builds it) and the evaluators."""
    trainer, readout = create_trainer(model, optimizer, batch_size=cfg.batch_size,
                                      label_smoothing=cfg.label_smoothing, cuda_graphs=cuda_graphs)
    engines = Engines(trainer, readout, create_evaluator(model, device), create_evaluator(model, device))
    if cfg.ema_decay > 0:
        engines.ema = create_ema(model, cfg.ema_decay, EMA_WARMUP_EPOCHS * epoch_length)
        engines.ema_evaluator = create_evaluator(engines.ema.ema_model, device)
    return engines


def _train_in_this_process(cfg: TrainConfig, claim: bool = True) -> TrainResult:
    """One process's training (a rank of a distributed job, or the only one)."""
    return build_training(cfg, claim=claim).run()


def train(cfg: TrainConfig | None = None, /, **overrides: Any) -> TrainResult:
    """Train as ``cfg`` says (``TrainConfig`` fields as keywords override it) and return a ``TrainResult``.

    ``train(epochs=3, data_dir="../shared/datasets")``, ``train(TrainConfig(recipe="fast"), seed=1)``. With
    ``backend`` set (or under torchrun) the job is data-parallel and the result is read back from the run
    directory that rank 0 wrote.
    """
    cfg = TrainConfig(**overrides) if cfg is None else cfg.replace(**overrides) if overrides else cfg
    if not requested(cfg):
        return _train_in_this_process(cfg)
    output_dir = check_output_dir(cfg.output_dir)
    if cfg.nproc_per_node:  # spawned here: this process holds the run directory for the processes it starts
        with claim_run_dir(output_dir, resume=cfg.resume, overwrite=cfg.overwrite):
            launch(partial(_train_in_this_process, claim=False), cfg)  # rank 0 wrote metrics.json, nothing comes back
        return TrainResult.from_dir(output_dir)
    # torchrun: this process's result; rank 0 of the job claims the directory
    result = launch(_train_in_this_process, cfg)
    return result if result is not None else TrainResult.from_dir(output_dir)
