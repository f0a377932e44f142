"""One recipe trained with several seeds, one run each, summarised as mean ± std of test accuracy
(``python -m ignite_lenet.seeds`` is its command line).
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Any

from ignite_lenet.config import MAX_SEED
from ignite_lenet.files import check_output_dir, write_json
from ignite_lenet.training.rundir import Contents, claim_run_dir, remove_earlier_run

SEEDS_FILE = "seeds.json"
DEFAULT_SEEDS_DIR = "runs/seeds"
SWEEP = Contents((SEEDS_FILE,), what="sweep")  # what a sweep writes beside its seed-N run directories


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and (sample) standard deviation of the runs' test accuracy."""
    accuracies = [r["test_accuracy"] for r in runs]
    return {
        "seeds": [r["seed"] for r in runs],
        "test_accuracy_mean": statistics.fmean(accuracies) if accuracies else None,
        "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
    }


def run_seeds(base: Any, seeds: list[int], log: Any = print) -> dict[str, Any]:
    """Train ``base`` (a ``TrainConfig``) once per seed into ``base.output_dir/seed-N``; returns the summary.

    The sweep holds its directory's lock throughout, and each run its own (``rundir``). Before the first seed
    trains, every run directory is checked as its run will check it: one in use by another process, or holding
    an earlier run while neither ``--resume`` nor ``--overwrite`` is given, refuses the whole sweep.
    """
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: each seed once, got {' '.join(map(str, seeds))}")
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"--seeds: each seed must be between 0 and {MAX_SEED}, got {seed}")
    root = check_output_dir(base.output_dir)
    with claim_run_dir(root, resume=base.resume, overwrite=base.overwrite, contents=SWEEP):
        for seed in seeds:
            with claim_run_dir(root / f"seed-{seed}", resume=base.resume, overwrite=base.overwrite):
                pass
        if base.overwrite:
            remove_earlier_run(root, SWEEP)
        return _sweep(base, root, seeds, log)


def _sweep(base: Any, root: Path, seeds: list[int], log: Any) -> dict[str, Any]:
    from ignite_lenet.training.job import train

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
        write_json(root / SEEDS_FILE, summary)
        log(f"seed {seed}: test accuracy {100 * m['test_accuracy']:.2f}%  best epoch {m['best_epoch']}  "
            f"{wall:.0f}s")
    log(f"{base.recipe}: {100 * summary['test_accuracy_mean']:.2f}% ± {100 * summary['test_accuracy_std']:.2f} "
        f"mean test accuracy over seeds {' '.join(map(str, seeds))} ({root / SEEDS_FILE})")
    return summary
