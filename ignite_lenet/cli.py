"""What every command line of the package shares: one-line errors and exit codes.

User mistakes (bad flags, missing or corrupt files, impossible settings) end with one line on stderr and
exit code 2, never a traceback; Ctrl-C ends with exit code 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

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
