"""Train LeNet-5 on MNIST with Ignite; writes the run directory (best_model.pt, history.json, curves.png, ...).

    python -m ignite_lenet.train                                   # the notebook's recipe, downloads MNIST to ./data
    python -m ignite_lenet.train --data-dir ../shared/datasets --epochs 3
    python -m ignite_lenet.train --resume                          # continue runs/lenet5 where it stopped
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import ignite
import ignite.distributed as idist
import torch
from ignite.handlers import Checkpoint
from ignite.utils import setup_logger

from . import artifacts, checkpoints, distributed, handlers, plots
from .cli import ArgumentParser, run_cli
from .config import TrainConfig, add_config_arguments, config_from_args
from .data import InMemoryLoader, RandomAffine, ensure_mnist, load_data
from .engines import create_evaluator, create_trainer
from .model import INPUT_SHAPE, LeNet5, count_parameters, optimize_layout

# Settings that shape the trajectory: a resumed run must use the checkpoint's values.
RESUME_MUST_MATCH = ("batch_size", "lr", "t_max", "eta_min", "seed", "val_source", "val_size", "epoch_length",
                     "sanity_check", "schedule", "augment")


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite (``TerminateOnNan`` stopped the trainer)."""


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m ignite_lenet.train",
        description="Train LeNet-5 on MNIST (32x32) with pytorch-ignite. Defaults are the original notebook's: "
        "Adam lr 1e-3, summed cross-entropy, CosineAnnealingLR(T_max=2, eta_min=1e-5) stepped per epoch, batch 32.",
    )
    add_config_arguments(parser)
    return parser


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a ``ValueError``."""
    if name == "auto":
        return idist.device() if idist.get_world_size() > 1 else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available (torch.cuda.is_available() is False)")
    if name == "cuda" and idist.get_world_size() > 1:
        return idist.device()
    return torch.device(name)


def _check_resumable(cfg: TrainConfig, checkpoint: dict[str, Any], path: Path) -> None:
    saved = checkpoint.get("config", {})
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


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train in this process (one rank of a distributed job, or the only one); returns the final metrics."""
    rank, world_size = idist.get_rank(), idist.get_world_size()
    logger = setup_logger("ignite_lenet", format="%(message)s", distributed_rank=rank, stream=sys.stdout)
    device = resolve_device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    output_dir = Path(cfg.output_dir)
    checkpoint_path = output_dir / artifacts.TRAINING_CHECKPOINT
    resume_from = None
    if cfg.resume:
        if not checkpoint_path.is_file():
            raise FileNotFoundError(f"--resume: no {artifacts.TRAINING_CHECKPOINT} in {output_dir} to resume from")
        resume_from = checkpoints.load_checkpoint(checkpoint_path, map_location=device)
        _check_resumable(cfg, resume_from, checkpoint_path)
    elif rank == 0 and checkpoint_path.is_file():
        logger.info(f"note: {output_dir} holds an earlier run; starting over (use --resume to continue it)")

    started = time.perf_counter()
    if rank == 0:  # one download, not one per process
        ensure_mnist(cfg.data_dir, cfg.download)
    idist.barrier()
    data = load_data(cfg.data_dir, cfg.download, cfg.val_source, cfg.val_size, cfg.train_eval_size).to(device)
    torch.manual_seed(cfg.seed)
    model = idist.auto_model(optimize_layout(LeNet5()).to(device), sync_bn=False)
    # fused Adam: one kernel for all parameters, same math as the per-tensor loop
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)

    epoch_length = 1 if cfg.sanity_check else cfg.epoch_length
    eval_batches = 1 if cfg.sanity_check else None
    shard = {"rank": rank, "world_size": world_size}
    augment = RandomAffine() if cfg.augment else None
    train_loader = InMemoryLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, max_batches=epoch_length,
                                  augment=augment, **shard)
    train_eval_loader = InMemoryLoader(data.train_eval, cfg.eval_batch_size, max_batches=eval_batches, pad=False, **shard)
    val_loader = InMemoryLoader(data.val, cfg.eval_batch_size, max_batches=eval_batches, pad=False, **shard)
    test_loader = InMemoryLoader(data.test, cfg.eval_batch_size, pad=False, **shard)

    trainer = create_trainer(model, optimizer, device)
    train_evaluator = create_evaluator(model, device)
    val_evaluator = create_evaluator(model, device)

    handlers.attach_epoch_seeding(trainer, train_loader)
    handlers.attach_terminate_on_nan(trainer)
    handlers.attach_evaluation(trainer, train_evaluator, train_eval_loader)
    handlers.attach_evaluation(trainer, val_evaluator, val_loader)
    best = handlers.attach_best_checkpoint(val_evaluator, trainer, model, cfg.to_dict(), output_dir)
    history = handlers.attach_history(
        trainer, train_evaluator, val_evaluator, optimizer, output_dir / artifacts.HISTORY if rank == 0 else None
    )
    if cfg.schedule == "onecycle":
        lr_scheduler = handlers.attach_one_cycle(trainer, optimizer, cfg.lr, cfg.epochs * len(train_loader))
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
    if cfg.patience is not None:
        to_save["early_stopping"] = handlers.attach_early_stopping(val_evaluator, trainer, cfg.patience)
    if rank == 0:
        handlers.attach_epoch_log(trainer, history, logger)
        handlers.attach_curves(trainer, history, output_dir / artifacts.CURVES)
        if cfg.progress:
            handlers.attach_progress_bar(trainer)
    to_save_with_config = {**to_save, "config": handlers.Value(cfg.to_dict)}
    handlers.attach_training_checkpoint(trainer, to_save_with_config, output_dir)

    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        artifacts.write_json(output_dir / artifacts.CONFIG, cfg.to_dict())
        logger.info(
            f"LeNet-5 ({count_parameters(model):,} parameters) on {device}, {world_size} process(es); "
            f"train {len(data.train):,} / val {len(data.val):,} ({cfg.val_source}) / test {len(data.test):,} images; "
            f"torch {torch.__version__}, ignite {ignite.__version__}"
        )
        _log_summary(logger)

    if resume_from is not None:
        Checkpoint.load_objects(to_load=to_save, checkpoint=resume_from)
        logger.info(f"resumed from {checkpoint_path} at epoch {trainer.state.epoch}")
    if resume_from is not None and trainer.state.epoch >= cfg.epochs:
        logger.info(f"already trained for {trainer.state.epoch} epochs; pass a larger --epochs to continue")
    else:
        trainer.run(train_loader, max_epochs=cfg.epochs, epoch_length=len(train_loader))
    if not math.isfinite(trainer.state.output if trainer.state.output is not None else 0.0):
        kept = (f"best_model.pt of epoch {history.best_epoch()} is kept in {output_dir}" if history.epochs
                else "no epoch completed")
        raise TrainingDiverged(
            f"training stopped at epoch {trainer.state.epoch}, iteration {trainer.state.iteration}: the loss became "
            f"{trainer.state.output}; lower --lr ({kept})"
        )
    training_time = time.perf_counter() - started

    # the test set, once, with the best epoch's weights (rank 0 wrote them: wait until it has)
    idist.barrier()
    best_model, best_info = checkpoints.load_best_model(output_dir / artifacts.BEST_MODEL, map_location=device)
    tester = create_evaluator(optimize_layout(best_model), device, confusion_matrix=True)
    metrics = tester.run(test_loader).metrics
    times = history.data["epoch_time_s"]
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
        "device": str(device),
        "world_size": world_size,
        "torch": torch.__version__,
        "ignite": ignite.__version__,
    }
    if rank == 0:
        artifacts.write_json(output_dir / artifacts.METRICS, result)
        plots.plot_confusion_matrix(
            metrics["confusion_matrix"],
            output_dir / artifacts.CONFUSION_MATRIX,
            title=f"MNIST test set, best epoch {result['best_epoch']}: {100 * result['test_accuracy']:.2f}% accuracy",
        )
        logger.info(
            f"test accuracy {100 * result['test_accuracy']:.2f}%  test loss {result['test_loss']:.4f}  "
            f"(best epoch {result['best_epoch']})  {result['train_images_per_s']:,.0f} training images/s  "
            f"{training_time:.0f}s in all; artifacts in {output_dir}"
        )
    return result


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train as ``cfg`` says and return the final metrics (also written to ``metrics.json``).

    With ``--backend`` or under torchrun the job is data-parallel (``distributed.launch``); processes spawned
    here report back through ``metrics.json``, written by rank 0.
    """
    if not distributed.requested(cfg):
        return train(cfg)
    result = distributed.launch(train, cfg)
    return result if result is not None else artifacts.read_json(Path(cfg.output_dir) / artifacts.METRICS)


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)

    def work() -> None:
        run(config_from_args(args))

    return run_cli(parser.prog, work, interrupted_hint="continue with --resume")


if __name__ == "__main__":
    raise SystemExit(main())
