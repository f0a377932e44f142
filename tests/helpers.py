"""Helpers for tests that run the command lines in subprocesses."""

import os
import sys

PYTHON = sys.executable


def python_env() -> dict[str, str]:
    """The test's environment, unbuffered."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
