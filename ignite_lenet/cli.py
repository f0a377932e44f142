"""What every command line of the package shares: one-line errors and exit codes.

User mistakes (bad flags, missing or corrupt files, impossible settings) end with one line on stderr and
exit code 2, never a traceback; Ctrl-C ends with exit code 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from .artifacts import check_output_dir

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``prog: error: message (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(prog: str, work: Callable[[], int | None], interrupted_hint: str = "") -> int:
    """Run ``work`` and turn user errors (``OSError``, ``ValueError``) into one line and exit code 2."""
    try:
        return work() or 0
    except (OSError, ValueError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{'; ' + interrupted_hint if interrupted_hint else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED


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


def output_dir(text: str) -> str:
    """An argparse ``type`` for ``--output-dir``: refuses a path that is (or lies under) an existing file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory, got an empty path")
    try:
        check_output_dir(text, flag="")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).strip()) from None
    return text
