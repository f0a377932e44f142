"""The command-line toolkit every command shares; it knows nothing of training or serving.

A settings dataclass declares its flags with ``option`` (help, default and range written once, in the field);
``add_arguments`` turns the fields into argparse flags, grouped by the fields' ``section``; ``check_fields``
checks a dataclass instance against its own annotations and ranges. ``run_cli`` turns user mistakes (bad
flags, missing or corrupt files, impossible settings, a missing optional extra) into one line on stderr and
exit code 2, never a traceback; Ctrl-C ends with exit code 130.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Union, get_args, get_origin, get_type_hints

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



# --- settings dataclasses on the command line --------------------------------------------------------------------


def flag_name(name: str) -> str:
    """The command-line flag of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Interval:
    """The range of a number field whose ends may be open: ``Interval(0, 1, "[)")`` is 0 <= x < 1."""

    low: float
    high: float
    ends: str = "[]"

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.ends[0] == "(" else value >= self.low
        below = value < self.high if self.ends[1] == ")" else value <= self.high
        return above and below  # NaN is in no interval

    def __str__(self) -> str:
        return f"{self.ends[0]}{self.low:g}, {self.high:g}{self.ends[1]}"


def option(default: Any, help: str, stored: bool = True, section: str | None = None, **cli: Any) -> Any:
    """A dataclass field whose metadata carries its command-line help (and ``flag``/``choices``/``metavar``).

    A callable ``default`` is a default factory (read when the settings are created, e.g. from the environment).
    ``range=(low, high)`` (inclusive) or ``range=Interval(...)`` bounds a number; ``check_fields`` enforces it and,
    for a tuple, the parser too. ``section`` starts a group of ``--help`` that the following fields join.
    ``stored=False`` marks what one command does rather than what the settings are (left out of saved copies).
    Other keywords are metadata the settings' own code reads.
    """
    metadata = {"help": help, "stored": stored, "section": section, **cli}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


def base_type(annotation: Any) -> tuple[type, bool]:
    """``int | None`` -> ``(int, True)``: the type a field holds and whether it may be ``None``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(get_args(annotation))
    return annotation, False


def shown_name(f: dataclasses.Field) -> str:
    """How an error names a field: its flag (``--augment`` of ``--augment/--no-augment``), or the field's own
    name when the only flag negates it (``--no-download`` sets ``download``)."""
    flag = f.metadata.get("flag", flag_name(f.name)).split("/")[0]
    return f.name if flag.startswith("--no-") else flag


def _finite(value: float) -> bool:
    """``math.isfinite`` that says False for an integer too large for a float (instead of raising)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _kind_error(kind: type, value: Any, nullable: bool, choices: Any) -> str | None:
    """What is wrong with the type of ``value`` for a field of ``kind`` (``None`` when nothing)."""
    if value is None and nullable:
        return None
    if kind is bool:
        return None if isinstance(value, bool) else "true, false or null" if nullable else "true or false"
    if kind is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value)
        return None if ok else "a finite number"
    if choices is not None:
        return None if isinstance(value, str) and value in choices else f"one of {', '.join(choices)}"
    return None if isinstance(value, str) and value else "a non-empty string"


def _range_error(kind: type, value: float, bounds: tuple[int, int] | Interval) -> str | None:
    """What is wrong with ``value`` against ``bounds`` (``None`` when it is inside)."""
    if isinstance(bounds, Interval):
        if value in bounds:
            return None
        return "a positive number" if (bounds.low, bounds.ends[0]) == (0, "(") and math.isinf(bounds.high) \
            else f"a number in {bounds}"
    low, high = bounds
    if low <= value <= high:
        return None
    if kind is float:  # float_range's words
        return f"a number from {low:g} to {high:g}"
    return f"a positive integer (at most {high:,})" if low == 1 else f"an integer from {low:,} to {high:,}"


def check_fields(settings: Any, skip: tuple[str, ...] = ()) -> None:
    """Check every field of a dataclass instance against its annotation, ``choices`` and ``range``: a
    ``ValueError`` names the first field at fault by its flag. ``None`` passes where the annotation allows it."""
    hints = get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        if f.name in skip:
            continue
        kind, nullable = base_type(hints[f.name])
        value, bounds = getattr(settings, f.name), f.metadata.get("range")
        problem = _kind_error(kind, value, nullable, f.metadata.get("choices"))
        if problem is None and value is not None and bounds is not None:
            problem = _range_error(kind, value, bounds)
        if problem is not None:
            raise ValueError(f"{shown_name(f)} must be {problem}, got {value!r}")


def add_arguments(parser: argparse.ArgumentParser, cls: type, defaults: dict[str, tuple[Any, str]] | None = None,
                  hidden: tuple[str, ...] = (), default_text: Callable[[str], str | None] = lambda name: None,
                  check_ranges: bool = True) -> None:
    """Add one flag per dataclass field, with the field's help text and default, grouped by ``section``.

    ``defaults`` gives a command its own ``(default, help)`` for some fields; ``hidden`` fields keep their flag
    but leave ``--help``. ``default_text(name)``, when not ``None``, is what ``--help`` says the default is
    (instead of the value). ``check_ranges`` checks a tuple ``range`` at parse time (``int_range``/``float_range``),
    so the error names the flag in argparse's words.
    """
    hints = get_type_hints(cls)
    defaults = defaults or {}
    group: Any = parser
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        help_text = meta.pop("help")
        if meta.get("section"):
            group = parser.add_argument_group(meta["section"])
        flag = meta.pop("flag", flag_name(f.name))
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.name in defaults:
            default, help_text = defaults[f.name]
        kind, _ = base_type(hints[f.name])
        bounds = meta.pop("range", None)
        parse: Any = kind
        if check_ranges and isinstance(bounds, tuple):
            parse = (float_range if kind is float else int_range)(*bounds)
        shown_default = default_text(f.name)
        if f.name in hidden:
            help_text = argparse.SUPPRESS
        elif shown_default is not None:
            help_text += f" (default: {shown_default})"
        elif default is not None and kind is not bool:
            help_text += " (default: %(default)s)"
        argparse_keywords = {k: meta[k] for k in ("choices", "metavar") if k in meta}
        _add_flag(group, f.name, flag, kind, default, help_text, parse, argparse_keywords)


def _add_flag(group: Any, dest: str, flag: str, kind: type, default: Any, help_text: str, parse: Any,
              meta: dict[str, Any]) -> None:
    if kind is bool and "/" in flag:  # --augment/--no-augment: None means "the recipe's" or "auto"
        group.add_argument(flag.split("/")[0], dest=dest, action=argparse.BooleanOptionalAction, default=default,
                           help=help_text)
    elif kind is bool:
        group.add_argument(flag, dest=dest, action="store_false" if default else "store_true", default=default,
                           help=help_text)
    else:
        if "choices" not in meta:
            meta.setdefault("metavar", {int: "N", float: "X"}.get(kind, "VALUE"))
        group.add_argument(flag, dest=dest, type=parse, default=default, help=help_text, **meta)


def explicit_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict[str, Any]:
    """The options the command line sets explicitly (``dest -> value``), defaults left out."""
    quiet = copy.deepcopy(parser)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return vars(quiet.parse_args(argv))


def from_args(args: argparse.Namespace, cls: type) -> Any:
    """The dataclass of the parsed arguments (its own checks raise ``ValueError`` on invalid values)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
