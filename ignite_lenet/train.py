"""Train LeNet-5 on MNIST with Ignite; writes the run directory (best_model.pt, history.json, curves.png, ...).

    python -m ignite_lenet.train                                   # the notebook's recipe, downloads MNIST to ./data
    python -m ignite_lenet.train --data-dir ../shared/datasets --epochs 3
    python -m ignite_lenet.train --recipe best                     # the most accurate recipe, the same LeNet-5
    python -m ignite_lenet.train --config runs/lenet5/config.json  # reproduce an earlier run
    python -m ignite_lenet.train --resume                          # continue runs/lenet5 where it stopped
    python -m ignite_lenet.train --overwrite                       # start runs/lenet5 over (its files are removed)

A run directory has one writer at a time (a second run into it is refused, naming the process that holds it)
and an earlier run in it is never overwritten without --overwrite; see ``ignite_lenet.training.rundir``.

The work is ``ignite_lenet.training.job.train``; this module parses arguments and turns user errors into one line.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from typing import Any

from ignite_lenet.cmdline import ArgumentParser, explicit_options, run_cli
from ignite_lenet.config import DEFAULT_RECIPE, DEFAULT_RECIPE_TEXT, TrainConfig
from ignite_lenet.config_cli import add_config_arguments, config_from_args
from ignite_lenet.mnist import prefetch
from ignite_lenet.training.rundir import how_to_continue


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m ignite_lenet.train",
        description=f"Train LeNet-5 on MNIST (32x32) with pytorch-ignite. Defaults are the original notebook's "
        f"(--recipe {DEFAULT_RECIPE}): {DEFAULT_RECIPE_TEXT}. --recipe fast and --recipe best train the same model "
        f"faster or better.",
    )
    add_config_arguments(parser)
    return parser


def __getattr__(name: str) -> Any:  # PEP 562: torch is imported when training starts, not to parse flags
    if name in ("TrainingDiverged", "train"):
        return getattr(importlib.import_module("ignite_lenet.training.job"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)

    configs: list[TrainConfig] = []

    def work() -> None:
        explicit = explicit_options(parser, sys.argv[1:] if argv is None else argv)
        cfg = config_from_args(args, explicit=explicit)
        configs.append(cfg)
        # MNIST is read on another core while torch is imported (spawned processes load their own; with torch
        # imported already, as in a notebook or a test calling main(), there is nothing to overlap with)
        overlap = cfg.nproc_per_node is None and "torch" not in sys.modules
        with prefetch.prefetching(cfg.data_dir) if overlap else contextlib.nullcontext():
            from ignite_lenet.training.job import train  # torch: imported while MNIST is read

            train(cfg)

    def what_next() -> str:  # after Ctrl-C: resume when an epoch was saved, else start over
        return how_to_continue(configs[0].output_dir) if configs else ""

    return run_cli(parser.prog, work, interrupted_hint=what_next)


class _CallableModule(types.ModuleType):
    """``ignite_lenet.train`` names two things: this command-line module and the API's ``train`` function
    (``from ignite_lenet import train``). Once this module is imported, Python binds the package's ``train``
    attribute to it, so calling it calls the function: ``train(epochs=3)`` works either way."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from ignite_lenet.training.job import train

        return train(*args, **kwargs)


if __name__ == "__main__":
    raise SystemExit(main())
sys.modules[__name__].__class__ = _CallableModule
