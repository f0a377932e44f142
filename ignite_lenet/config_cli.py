"""``TrainConfig`` on the command line, for the commands that train (``train``, ``seeds``).

One flag per field (``cmdline.add_arguments``: help and default written once, in the schema, grouped by its
sections); the recipe fields say which recipe their default comes from; ``config_from_args`` applies the
precedence flags given > ``--config FILE`` > the recipe's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ignite_lenet.cmdline import add_arguments, from_args
from ignite_lenet.config import TrainConfig, recipe_default_text


def add_config_arguments(parser: argparse.ArgumentParser, defaults: dict[str, tuple[Any, str]] | None = None,
                         hidden: tuple[str, ...] = ()) -> None:
    """A flag per ``TrainConfig`` field and ``--config FILE``.

    ``defaults`` gives a command its own ``(default, help)`` for some fields (``seeds``' ``--output-dir``);
    ``hidden`` fields keep their flag but leave ``--help`` (``seeds`` refuses ``--seed`` in favour of ``--seeds``).
    Ranges are checked by ``TrainConfig.validate`` only, not at parse time: a ``--config`` file's values need the
    check anyway, and then every range error reads the same.
    """
    add_arguments(parser, TrainConfig, defaults, hidden, default_text=recipe_default_text, check_ranges=False)
    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help="read settings from a JSON file (e.g. an earlier run's config.json, which reproduces that run); "
        "flags given on the command line override the file, the file overrides --recipe's defaults",
    )


def config_from_args(args: argparse.Namespace, explicit: dict[str, Any] | None = None) -> TrainConfig:
    """The ``TrainConfig`` of parsed arguments (raises ``ValueError`` on invalid values).

    With ``explicit`` (``cmdline.explicit_options``) and ``--config FILE``, the precedence is: flags given on the
    command line, then the file, then the recipe's defaults, then the dataclass defaults.
    """
    if args.config is None or explicit is None:
        return from_args(args, TrainConfig)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig.from_file(args.config, **{k: v for k, v in explicit.items() if k in names})
