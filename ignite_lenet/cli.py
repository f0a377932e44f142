"""What every command line of the package shares: one-line errors, exit codes, and the flags of ``TrainConfig``.

User mistakes (bad flags, missing or corrupt files, impossible settings) end with one line on stderr and
exit code 2, never a traceback; Ctrl-C ends with exit code 130. ``add_config_arguments`` generates a flag
per ``TrainConfig`` field (help and default written once, in the schema); ``config_from_args`` applies the
precedence flags given > ``--config FILE`` > the recipe's defaults.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import types
from collections.abc import Callable
from typing import Any, NoReturn, Union, get_args, get_origin, get_type_hints

from ignite_lenet.config import RECIPES, TrainConfig, flag_name
from ignite_lenet.files import WriteError, check_output_dir

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``prog: error: message (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# The import names each optional extra brings (pyproject.toml): a command run without its extra says which to install.
EXTRA_MODULES = {
    "train": ("torch", "torchvision", "ignite", "matplotlib", "onnx", "onnxscript", "torchinfo", "tqdm"),
    "serve": ("fastapi", "starlette", "pydantic", "uvicorn", "multipart", "python_multipart", "prometheus_client",
              "httptools", "uvloop"),
}
EXTRA_NAMES = {"train": "training", "serve": "serving"}


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """The extra (``"train"``, ``"serve"``) whose module ``error`` could not import, or ``None`` (a real bug)."""
    top = (error.name or "").split(".")[0]
    return next((extra for extra, modules in EXTRA_MODULES.items() if top in modules), None)


def _missing_modules(modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` cannot be imported (found without importing them)."""
    import importlib.util

    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: sys.modules[name] is None (made unimportable)
            found = False
        if not found:
            missing.append(name)
    return missing


def run_cli(prog: str, work: Callable[[], int | None], interrupted_hint: str | Callable[[], str] = "") -> int:
    """Run ``work`` and turn user errors (``OSError``, ``ValueError``, a missing optional extra) into one line and
    exit code 2.

    A file that cannot be written (a full disk, a read-only file system) is an ``OSError`` naming it
    (``files.WriteError``), so it ends the same way; so does standard output on a full disk or a closed pipe
    (``_StandardOutput``), checked before returning rather than in a traceback at exit. ``interrupted_hint`` (or
    what it returns when Ctrl-C came) follows the "interrupted" line.
    """
    stdout = sys.stdout
    sys.stdout = _StandardOutput(stdout)
    try:
        code = work() or 0
        sys.stdout.flush()
        return code
    except ModuleNotFoundError as e:
        extra = missing_extra(e)
        if extra is None:
            raise
        missing = _missing_modules(EXTRA_MODULES[extra]) or [e.name.split(".")[0]]
        print(f'{prog}: error: this command needs the {EXTRA_NAMES[extra]} extra: pip install "ignite_lenet[{extra}]" '
              f"(missing module{'s' if len(missing) > 1 else ''} {', '.join(missing)})", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        hint = interrupted_hint() if callable(interrupted_hint) else interrupted_hint
        print(f"{prog}: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        sys.stdout = stdout


class _StandardOutput:
    """``sys.stdout`` while a command runs: a write that fails is a ``WriteError`` naming standard output.

    Python reports such a failure as an ``OSError`` without a file name (``[Errno 28] No space left on device``),
    which says neither what could not be written nor that the results are incomplete.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as e:
            raise WriteError.of(e, "standard output") from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            raise WriteError.of(e, "standard output") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]``, else one line naming the flag and the range.

    Rejects what would overflow later (``--threads 1e20``, ``--batch-size 10**23``) or make no sense (negative
    counts) at parse time, so the error names the flag.
    """

    def parse(text: str) -> int:
        try:
            value = int(text.strip().replace("_", ""), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer from {low:,} to {high:,}, got {text!r}") from None
        if not low <= value <= high:
            shown = text if len(text) <= 24 else text[:21] + "..."
            raise argparse.ArgumentTypeError(f"must be an integer from {low:,} to {high:,}, got {shown}")
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def float_range(low: float, high: float) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[low, high]``, else one line naming the flag and the range."""

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number from {low:g} to {high:g}, got {text!r}") from None
        if not low <= value <= high:  # NaN fails too
            shown = text if len(text) <= 24 else text[:21] + "..."
            raise argparse.ArgumentTypeError(f"must be a number from {low:g} to {high:g}, got {shown}")
        return value

    parse.__name__ = "number"
    return parse


def output_dir(text: str) -> str:
    """An argparse ``type`` for ``--output-dir``: refuses a path that is (or lies under) an existing file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory, got an empty path")
    try:
        check_output_dir(text, flag="")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).strip()) from None
    return text


def _base_type(annotation: Any) -> type:
    """``int | None`` -> ``int``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def add_config_arguments(parser: argparse.ArgumentParser, cls: type = TrainConfig,
                         defaults: dict[str, tuple[Any, str]] | None = None, hidden: tuple[str, ...] = (),
                         config_file: bool = True) -> None:
    """Add one flag per dataclass field, with the field's help text and default.

    ``defaults`` gives a command its own ``(default, help)`` for some fields (``seeds``' ``--output-dir``);
    ``hidden`` fields keep their flag but leave ``--help`` (``seeds`` refuses ``--seed`` in favour of ``--seeds``).
    A field whose metadata has ``range=(low, high)`` is checked at parse time (``int_range``/``float_range``).
    ``config_file`` adds ``--config FILE``.
    """
    hints = get_type_hints(cls)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        help_text = meta.pop("help")
        meta.pop("stored", None)
        flag = meta.pop("flag", flag_name(f.name))
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.name in defaults:
            default, help_text = defaults[f.name]
        kind = _base_type(hints[f.name])
        bounds = meta.pop("range", None)
        parse = kind if bounds is None else (float_range if kind is float else int_range)(*bounds)
        if f.name in hidden:
            help_text = argparse.SUPPRESS
        elif help_text.startswith("recipe: "):
            notebook = RECIPES["notebook"][f.name]
            help_text = help_text[len("recipe: "):] + f" (default: from --recipe; notebook: {notebook})"
        elif default is not None and kind is not bool:
            help_text += " (default: %(default)s)"
        if kind is bool and "/" in flag:  # --augment/--no-augment: None means "the recipe's" or "auto"
            parser.add_argument(flag.split("/")[0], dest=f.name, action=argparse.BooleanOptionalAction,
                                default=default, help=help_text)
            continue
        if kind is bool:
            action = "store_false" if default else "store_true"
            parser.add_argument(flag, dest=f.name, action=action, default=default, help=help_text)
            continue
        if "choices" not in meta:
            meta.setdefault("metavar", {int: "N", float: "X"}.get(kind, "VALUE"))
        parser.add_argument(flag, dest=f.name, type=parse, default=default, help=help_text, **meta)
    if not config_file:
        return
    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help="read settings from a JSON file (e.g. an earlier run's config.json, which reproduces that run); "
        "flags given on the command line override the file, the file overrides --recipe's defaults",
    )


def explicit_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict[str, Any]:
    """The options the command line sets explicitly (``dest -> value``), defaults left out."""
    quiet = copy.deepcopy(parser)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return vars(quiet.parse_args(argv))


def config_from_args(args: argparse.Namespace, cls: type = TrainConfig,
                     explicit: dict[str, Any] | None = None) -> Any:
    """Build the dataclass from parsed arguments (raises ``ValueError`` on invalid values).

    With ``explicit`` (see ``explicit_options``) and ``--config FILE``, the precedence is: flags given on the
    command line, then the file, then the recipe's defaults, then the dataclass defaults.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    if getattr(args, "config", None) is None or explicit is None:
        return cls(**{name: getattr(args, name) for name in names})
    overrides = {k: v for k, v in explicit.items() if k in names}
    return cls.from_file(args.config, **overrides)
