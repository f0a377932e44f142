"""The Python API: build a training run from a ``TrainConfig``, attach your own handlers, run it, get objects back.

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
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ignite
import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint, EMAHandler
from ignite.utils import setup_logger
from matplotlib.figure import Figure
from torch import nn

from . import artifacts, checkpoints, devices, distributed, graphed, handlers, plots
from .augment import ElasticDistortion, RandomAffine
from .config import TrainConfig
from .data import InMemoryLoader, MNISTData, ensure_mnist, load_data
from .engines import create_evaluator, create_train_step
from .model import INPUT_SHAPE, LeNet5, Standardized, count_parameters, optimize_layout

# Settings that shape the trajectory: a resumed run must use the checkpoint's values.
RESUME_MUST_MATCH = ("batch_size", "lr", "t_max", "eta_min", "seed", "val_source", "val_size", "epoch_length",
                     "sanity_check", "schedule", "augment", "elastic", "optimizer", "weight_decay", "pct_start",
                     "label_smoothing", "ema_decay", "normalize", "fast_tanh")
RESUME_ABSENT_MEANS = {"fast_tanh": False}  # the value of a setting missing from an older checkpoint's config
RESUME_KEYS = ("config", "trainer", "model", "optimizer", "lr_scheduler", "best_checkpoint", "history")
EMA_WARMUP_EPOCHS = 1  # the EMA's momentum warms up over the first epoch's iterations
GPU_READOUT_EVERY = 50  # on a GPU the loss is read (one host sync) every that many steps; on CPU every step


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
        return plots.curves_figure(self.history, self.best.get("epoch"))

    @classmethod
    def from_dir(cls, output_dir: str | Path) -> TrainResult:
        """Read a finished run back from its directory."""
        output_dir = Path(output_dir)
        model, best = checkpoints.load_best_model(output_dir / artifacts.BEST_MODEL)
        return cls(model=model, history=artifacts.read_json(output_dir / artifacts.HISTORY),
                   metrics=artifacts.read_json(output_dir / artifacts.METRICS), output_dir=output_dir,
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
    model: nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    trainer: Engine
    train_evaluator: Engine
    val_evaluator: Engine
    ema: EMAHandler | None
    ema_evaluator: Engine | None
    loaders: dict[str, InMemoryLoader]
    history: handlers.History
    best_checkpoint: Checkpoint
    to_save: dict[str, Any]
    logger: logging.Logger
    started: float
    handlers: dict[str, Any] = field(default_factory=dict)
    determinism: ExitStack = field(default_factory=ExitStack)  # --deterministic's settings, restored by run()

    def run(self) -> TrainResult:
        """Train for ``cfg.epochs`` epochs (or what remains after a resume), then test the best model once."""
        with self.determinism:  # restores torch's global flags however the run ends
            return self._run()

    def _run(self) -> TrainResult:
        cfg, trainer, history, output_dir = self.cfg, self.trainer, self.history, self.output_dir
        rank, world_size = idist.get_rank(), idist.get_world_size()
        if trainer.state.epoch >= cfg.epochs and trainer.state.epoch > 0:
            self.logger.info(f"already trained for {trainer.state.epoch} epochs; pass a larger --epochs to continue")
        else:
            trainer.run(self.loaders["train"], max_epochs=cfg.epochs, epoch_length=len(self.loaders["train"]))
        output = self.handlers["loss_readout"].value
        if output is not None and not math.isfinite(output):
            kept = (f"best_model.pt of epoch {history.best_epoch()} is kept in {output_dir}" if history.epochs
                    else "no epoch completed")
            raise TrainingDiverged(
                f"training stopped at epoch {trainer.state.epoch}, iteration {trainer.state.iteration}: the loss "
                f"became {output}; lower --lr ({kept})"
            )
        training_time = time.perf_counter() - self.started

        # the test set, once, with the best epoch's weights (rank 0 wrote them: wait until it has)
        idist.barrier()
        best_model, best_info = checkpoints.load_best_model(output_dir / artifacts.BEST_MODEL, map_location=self.device)
        tester = create_evaluator(optimize_layout(best_model, self.device), self.device, confusion_matrix=True)
        metrics = tester.run(self.loaders["test"]).metrics
        times = history.data["epoch_time_s"]
        train_loader = self.loaders["train"]
        images_per_epoch = min(len(train_loader) * cfg.batch_size, train_loader.shard_size()) * world_size
        result = {
            "test_loss": float(metrics["loss"]),
            "test_accuracy": float(metrics["accuracy"]),
            "best_epoch": int(best_info["epoch"]),
            "best_val_loss": float(best_info["val_loss"]),
            "best_val_accuracy": float(best_info["val_accuracy"]),
            "epochs_run": history.epochs,
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
        if rank == 0:
            artifacts.write_json(output_dir / artifacts.METRICS, result)
            plots.plot_confusion_matrix(
                metrics["confusion_matrix"],
                output_dir / artifacts.CONFUSION_MATRIX,
                title=f"MNIST test set, best epoch {result['best_epoch']}: "
                      f"{100 * result['test_accuracy']:.2f}% accuracy",
            )
            self.logger.info(
                f"test accuracy {100 * result['test_accuracy']:.2f}%  test loss {result['test_loss']:.4f}  "
                f"(best epoch {result['best_epoch']}{', EMA weights' if best_info.get('weights') == 'ema' else ''})  "
                f"{result['train_images_per_s']:,.0f} training images/s  {training_time:.0f}s in all; "
                f"artifacts in {output_dir}"
            )
        idist.barrier()  # every rank leaves together: none tears down the process group while rank 0 still writes
        return TrainResult(model=best_model.cpu().eval(), history=history.to_dict(), metrics=result,
                           output_dir=output_dir, best=_best_summary(best_info))


def _check_resumable(cfg: TrainConfig, checkpoint: dict[str, Any], path: Path) -> None:
    missing = [k for k in RESUME_KEYS if k not in checkpoint]
    if missing or not isinstance(checkpoint["config"], dict):
        what = f"missing {', '.join(missing)}" if missing else "its 'config' is not a dictionary"
        raise ValueError(f"--resume: {path} is not a training checkpoint of this package ({what})")
    saved = {**RESUME_ABSENT_MEANS, **checkpoint["config"]}  # an older checkpoint trained without newer settings
    # a one-cycle schedule spans the whole run: its length cannot change midway
    for name in RESUME_MUST_MATCH + (("epochs",) if cfg.schedule == "onecycle" else ()):
        if name in saved and saved[name] != getattr(cfg, name):
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"--resume: {path} was trained with {flag} {saved[name]}, not {getattr(cfg, name)}; "
                f"resume with the same setting or start a new --output-dir"
            )


def _log_summary(logger: logging.Logger) -> None:
    """The notebook's torchsummary table, from torchinfo."""
    from torchinfo import summary

    stats = summary(LeNet5(), input_size=(1, *INPUT_SHAPE), verbose=0, col_names=("output_size", "num_params"))
    logger.info(str(stats))


def _initial_weights(path: str) -> LeNet5:
    """The ``LeNet5`` of ``--init-from``; errors name the flag."""
    try:
        initial = checkpoints.load_model(path)
    except (OSError, ValueError) as e:
        raise type(e)(f"--init-from: {e}") from None
    if not isinstance(initial, LeNet5):
        raise ValueError(f"--init-from {path}: needs a best_model.pt or run directory (plain LeNet5 weights), not "
                         f"an exported program")
    return initial


def build_training(cfg: TrainConfig) -> Training:
    """Build data, model, optimizer, loaders, trainer, evaluators and handlers for ``cfg`` (and restore them
    when ``cfg.resume``); nothing runs until ``Training.run()``."""
    rank, world_size = idist.get_rank(), idist.get_world_size()
    logger = setup_logger("ignite_lenet", format="%(message)s", distributed_rank=rank, stream=sys.stdout)
    for handler in logger.handlers:  # setup_logger keeps its first call's stream: follow today's sys.stdout
        if type(handler) is logging.StreamHandler:  # (a redirect, a notebook cell, a test's capture)
            handler.stream = sys.stdout
    determinism = ExitStack()  # entered before any CUDA work (cuBLAS reads its workspace setting once)
    determinism.enter_context(devices.configure_determinism(cfg.deterministic))
    try:
        return _build(cfg, rank, world_size, logger, determinism)
    except BaseException:
        determinism.close()
        raise


def _build(cfg: TrainConfig, rank: int, world_size: int, logger: logging.Logger, determinism: ExitStack) -> Training:
    output_dir = artifacts.check_output_dir(cfg.output_dir)
    device = devices.resolve_device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    checkpoint_path = output_dir / artifacts.TRAINING_CHECKPOINT
    resume_from = None
    if cfg.resume:
        if not checkpoint_path.is_file():
            raise FileNotFoundError(f"--resume: no {artifacts.TRAINING_CHECKPOINT} in {output_dir} to resume from")
        try:
            resume_from = checkpoints.load_checkpoint(checkpoint_path, map_location=device)
        except ValueError as e:
            raise ValueError(f"--resume: {e}") from None
        _check_resumable(cfg, resume_from, checkpoint_path)
    elif rank == 0 and checkpoint_path.is_file():
        logger.info(f"note: {output_dir} holds an earlier run; starting over (use --resume to continue it)")
    initial = _initial_weights(cfg.init_from) if cfg.init_from is not None else None  # before the data: fail fast

    started = time.perf_counter()
    with idist.one_rank_first(local=True):  # one download per machine, not one per process
        ensure_mnist(cfg.data_dir, cfg.download)
    data = load_data(cfg.data_dir, cfg.download, cfg.val_source, cfg.val_size, cfg.train_eval_size).to(device)
    torch.manual_seed(cfg.seed)
    net: nn.Module = optimize_layout(LeNet5(fast_tanh=cfg.fast_tanh), device)
    if cfg.normalize:  # statistics of the training split, the same on every rank
        net = Standardized(net, data.train.images.mean().item(), data.train.images.std().item())
    if initial is not None:
        if isinstance(net, Standardized):
            net.load_plain_state_dict(initial.state_dict())
        else:
            net.load_state_dict(initial.state_dict())
    model = idist.auto_model(net.to(device), sync_bn=False)
    cuda_graphs = graphed.use_cuda_graphs(cfg.cuda_graphs, device, world_size,
                                          varying_betas=cfg.schedule == "onecycle")
    optimizer = graphed.create_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay, device,
                                         cuda_graphs)

    epoch_length = 1 if cfg.sanity_check else cfg.epoch_length
    eval_batches = 1 if cfg.sanity_check else None
    shard = {"rank": rank, "world_size": world_size}
    augment = RandomAffine(elastic=ElasticDistortion() if cfg.elastic else None) if cfg.augment else None
    loaders = {
        "train": InMemoryLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, max_batches=epoch_length,
                                augment=augment, **shard),
        "train_eval": InMemoryLoader(data.train_eval, cfg.eval_batch_size, max_batches=eval_batches, pad=False,
                                     **shard),
        "val": InMemoryLoader(data.val, cfg.eval_batch_size, max_batches=eval_batches, pad=False, **shard),
        "test": InMemoryLoader(data.test, cfg.eval_batch_size, pad=False, **shard),
    }

    step = create_train_step(model, optimizer, cfg.batch_size, cfg.label_smoothing, cuda_graphs)
    trainer = Engine(step)
    train_evaluator = create_evaluator(model, device)
    val_evaluator = create_evaluator(model, device)
    attached: dict[str, Any] = {}
    attached["epoch_seeding"] = handlers.attach_epoch_seeding(trainer, loaders["train"])
    every = 1 if device.type == "cpu" else GPU_READOUT_EVERY  # reading a GPU loss waits for the GPU
    readout = graphed.attach_loss_readout(trainer, step, every)  # the mean loss, for the next three handlers
    attached["loss_readout"] = readout
    attached["terminate_on_nan"] = handlers.attach_terminate_on_nan(trainer, readout)
    ema = ema_evaluator = None
    if cfg.ema_decay > 0:  # before the evaluations, so each epoch's EMA includes its last step
        ema = handlers.attach_ema(trainer, model, cfg.ema_decay, EMA_WARMUP_EPOCHS * len(loaders["train"]))
        ema_evaluator = create_evaluator(ema.ema_model, device)
    attached["train_evaluation"] = handlers.attach_evaluation(trainer, train_evaluator, loaders["train_eval"])
    attached["val_evaluation"] = handlers.attach_evaluation(trainer, val_evaluator, loaders["val"])
    if ema_evaluator is not None:
        attached["ema_evaluation"] = handlers.attach_evaluation(trainer, ema_evaluator, loaders["val"])
    selection = handlers.Selection(model, val_evaluator, ema.ema_model if ema else None, ema_evaluator)
    best = handlers.attach_best_checkpoint(trainer, selection, cfg.to_dict(), output_dir)
    history = handlers.attach_history(trainer, train_evaluator, val_evaluator, optimizer,
                                      output_dir / artifacts.HISTORY if rank == 0 else None, ema_evaluator)
    if cfg.schedule == "onecycle":
        lr_scheduler = handlers.attach_one_cycle(trainer, optimizer, cfg.lr, cfg.epochs * len(loaders["train"]),
                                                 cfg.pct_start)
    else:
        lr_scheduler = handlers.attach_lr_scheduler(trainer, optimizer, cfg.t_max, cfg.eta_min)
    to_save: dict[str, Any] = {
        "trainer": trainer,
        "model": model,
        "optimizer": optimizer,
        "lr_scheduler": lr_scheduler,
        "best_checkpoint": best,
        "history": history,
    }
    if ema is not None:  # the average and its momentum schedule's position, for an exact resume
        to_save["ema_model"] = ema.ema_model
        to_save["ema_momentum"] = handlers.SchedulerPosition(ema.momentum_scheduler)
    if cfg.patience is not None:
        to_save["early_stopping"] = handlers.attach_early_stopping(trainer, selection, cfg.patience)
    if rank == 0:
        attached["epoch_log"] = handlers.attach_epoch_log(trainer, history, logger)
        attached["curves"] = handlers.attach_curves(trainer, history, output_dir / artifacts.CURVES)
        if cfg.progress:
            attached["progress_bar"] = handlers.attach_progress_bar(trainer, readout)
        if cfg.tensorboard:
            evaluators = {"train": train_evaluator, "val": val_evaluator}
            if ema_evaluator is not None:
                evaluators["val_ema"] = ema_evaluator
            attached["tensorboard"] = handlers.attach_tensorboard(trainer, optimizer, evaluators,
                                                                  output_dir / "tensorboard", readout)
    to_save_with_config = {**to_save, "config": handlers.Value(cfg.to_dict)}
    attached["training_checkpoint"] = handlers.attach_training_checkpoint(trainer, to_save_with_config, output_dir)
    if resume_from is not None:  # before anything is written, so a checkpoint that does not fit changes nothing
        try:
            Checkpoint.load_objects(to_load=to_save, checkpoint=resume_from)
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"--resume: {checkpoint_path} does not fit this run ({first})") from None

    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        artifacts.write_json(output_dir / artifacts.CONFIG, cfg.to_dict())
        logger.info(
            f"LeNet-5 ({count_parameters(model):,} parameters) on {device}, {world_size} process(es); recipe "
            f"{cfg.recipe}; train {len(data.train):,} / val {len(data.val):,} ({cfg.val_source}) / test "
            f"{len(data.test):,} images; torch {torch.__version__}, ignite {ignite.__version__}"
        )
        _log_summary(logger)
    if resume_from is not None:
        logger.info(f"resumed from {checkpoint_path} at epoch {trainer.state.epoch}")

    return Training(cfg=cfg, device=device, output_dir=output_dir, data=data, model=model, optimizer=optimizer,
                    lr_scheduler=lr_scheduler, trainer=trainer, train_evaluator=train_evaluator,
                    val_evaluator=val_evaluator, ema=ema, ema_evaluator=ema_evaluator, loaders=loaders,
                    history=history, best_checkpoint=best, to_save=to_save, logger=logger, started=started,
                    handlers=attached, determinism=determinism)


def _train_here(cfg: TrainConfig) -> TrainResult:
    """One process's training (a rank of a distributed job, or the only one)."""
    return build_training(cfg).run()


def train(cfg: TrainConfig | None = None, /, **overrides: Any) -> TrainResult:
    """Train as ``cfg`` says (``TrainConfig`` fields as keywords override it) and return a ``TrainResult``.

    ``train(epochs=3, data_dir="../shared/datasets")``, ``train(TrainConfig(recipe="fast"), seed=1)``. With
    ``backend`` set (or under torchrun) the job is data-parallel and the result is read back from the run
    directory that rank 0 wrote.
    """
    cfg = TrainConfig(**overrides) if cfg is None else cfg.replace(**overrides) if overrides else cfg
    if not distributed.requested(cfg):
        return _train_here(cfg)
    artifacts.check_output_dir(cfg.output_dir)
    result = distributed.launch(_train_here, cfg)  # this process's result under torchrun; None when spawned here
    return result if result is not None else TrainResult.from_dir(cfg.output_dir)
