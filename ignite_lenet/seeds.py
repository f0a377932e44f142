"""Train one recipe with several seeds, one after another, and summarise test accuracy as mean ± std.

    python -m ignite_lenet.seeds --recipe best --seeds 0 1 2 --data-dir ../shared/datasets
    python -m ignite_lenet.seeds --recipe fast --seeds 0 1 2 --output-dir runs/fast-seeds --epochs 5

Each seed trains into ``OUTPUT_DIR/seed-N`` with every other flag of ``python -m ignite_lenet.train``;
``OUTPUT_DIR/seeds.json`` holds one entry per seed (test accuracy, best epoch, wall time) and the mean and
standard deviation, rewritten after every seed so an interrupted sweep keeps what it finished.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from typing import Any

from . import artifacts
from .cli import ArgumentParser, run_cli
from .config import MAX_SEED, add_config_arguments, config_from_args, explicit_options

SEEDS_FILE = "seeds.json"


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m ignite_lenet.seeds",
        description="Train the same recipe with several seeds (one run each, into OUTPUT_DIR/seed-N) and "
        "summarise test accuracy as mean ± std in OUTPUT_DIR/seeds.json. Every training flag applies to all runs.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="N",
                        help="the seeds to train, in order (default: 0 1 2)")
    add_config_arguments(parser)
    parser.set_defaults(output_dir="runs/seeds")
    for action in parser._actions:
        if action.dest == "output_dir":
            action.help = "directory holding one seed-N run directory per seed and seeds.json (default: runs/seeds)"
        if action.dest == "seed":
            action.help = argparse.SUPPRESS
    return parser


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and (sample) standard deviation of the runs' test accuracy."""
    accuracies = [r["test_accuracy"] for r in runs]
    return {
        "seeds": [r["seed"] for r in runs],
        "test_accuracy_mean": statistics.fmean(accuracies) if accuracies else None,
        "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
    }


def run_seeds(base: Any, seeds: list[int], log: Any = print) -> dict[str, Any]:
    """Train ``base`` (a ``TrainConfig``) once per seed into ``base.output_dir/seed-N``; returns the summary."""
    from .api import train

    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: each seed once, got {' '.join(map(str, seeds))}")
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"--seeds: each seed must be between 0 and {MAX_SEED}, got {seed}")
    root = artifacts.check_output_dir(base.output_dir)
    runs: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for seed in seeds:
        cfg = base.replace(seed=seed, output_dir=str(root / f"seed-{seed}"))
        started = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - started
        m = result.metrics
        runs.append({"seed": seed, "test_accuracy": m["test_accuracy"], "test_loss": m["test_loss"],
                     "best_epoch": m["best_epoch"], "best_weights": m.get("best_weights", "raw"),
                     "best_val_accuracy": m["best_val_accuracy"], "wall_time_s": wall, "device": m["device"]})
        summary = {"recipe": base.recipe, "config": {**base.to_dict(), "seed": None}, "runs": runs,
                   **summarise(runs), "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}
        artifacts.write_json(root / SEEDS_FILE, summary)
        log(f"seed {seed}: test accuracy {100 * m['test_accuracy']:.2f}%  best epoch {m['best_epoch']}  "
            f"{wall:.0f}s")
    log(f"{base.recipe}: {100 * summary['test_accuracy_mean']:.2f}% ± {100 * summary['test_accuracy_std']:.2f} "
        f"mean test accuracy over seeds {' '.join(map(str, seeds))} ({root / SEEDS_FILE})")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)

    def work() -> None:
        explicit = explicit_options(parser, sys.argv[1:] if argv is None else argv)
        if "seed" in explicit:  # each run's seed comes from --seeds; a lone --seed would be silently ignored
            raise ValueError("--seed: give the seeds to train with --seeds N [N ...]")
        run_seeds(config_from_args(args, explicit=explicit), args.seeds)

    return run_cli(parser.prog, work, interrupted_hint="finished seeds are kept in seeds.json")


if __name__ == "__main__":
    raise SystemExit(main())
