"""Helpers for tests that run the command lines in subprocesses."""

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PYTHON = sys.executable


def python_env() -> dict[str, str]:
    """The test's environment, unbuffered."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m module args...`` as a user types it, output captured as text."""
    return subprocess.run([PYTHON, "-m", module, *args], env=python_env(), capture_output=True, text=True,
                          timeout=300)


def truncated_mnist_copy(mnist_dir: Path, dest: Path) -> Path:
    """A copy of the MNIST directory whose test-label file is cut short (a corrupt download)."""
    from ignite_lenet.mnist.idx import raw_dir

    raw = raw_dir(dest)
    raw.mkdir(parents=True)
    for path in raw_dir(mnist_dir).iterdir():
        shutil.copy(path, raw / path.name)
    target = raw / "t10k-labels-idx1-ubyte"
    target.write_bytes(target.read_bytes()[:5000])
    return dest



def assert_one_line_error(code: int, err: str, *expected: str) -> None:
    """A user mistake: exit code 2 and one line on stderr naming each of ``expected``, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, f"expected one line, got:\n{err}"
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"


def call_main(main, args: list[str], capsys) -> tuple[int, str, str]:
    """Run a CLI ``main`` in-process as a user would: argparse's exits count as exit codes."""
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -t tmpfs -o size=600k``) mounted on ``path`` for the block, unmounted after: a
    real full disk. Skips (with the reason) when not root or when this container does not permit mounting."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def remount(path: Path, options: str) -> None:
    """``mount -o remount,OPTIONS`` of a ``small_tmpfs``: ``size=8m`` frees space, ``ro`` makes it read-only."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)
