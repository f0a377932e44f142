"""Train one recipe with several seeds, one after another, and summarise test accuracy as mean ± std.

    python -m ignite_lenet.seeds --recipe best --seeds 0 1 2 --data-dir ../shared/datasets
    python -m ignite_lenet.seeds --recipe fast --seeds 0 1 2 --output-dir runs/fast-seeds --epochs 5

Each seed trains into ``OUTPUT_DIR/seed-N`` with every other flag of ``python -m ignite_lenet.train``;
``OUTPUT_DIR/seeds.json`` holds one entry per seed (test accuracy, best epoch, wall time) and the mean and
standard deviation, rewritten after every seed so an interrupted sweep keeps what it finished.
"""

from __future__ import annotations

import sys

from ignite_lenet.cmdline import ArgumentParser, explicit_options, run_cli
from ignite_lenet.config_cli import add_config_arguments, config_from_args
from ignite_lenet.training.seeds import DEFAULT_SEEDS_DIR, run_seeds


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m ignite_lenet.seeds",
        description="Train the same recipe with several seeds (one run each, into OUTPUT_DIR/seed-N) and "
        "summarise test accuracy as mean ± std in OUTPUT_DIR/seeds.json. Every training flag applies to all runs.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="N",
                        help="the seeds to train, in order (default: 0 1 2)")
    add_config_arguments(parser, defaults={"output_dir": (
        DEFAULT_SEEDS_DIR, "directory holding one seed-N run directory per seed and seeds.json")},
        hidden=("seed",))
    return parser


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
