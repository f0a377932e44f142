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


class ServerProcess:
    """``python -m ignite_lenet.serve`` in a subprocess on a free 127.0.0.1 port, as an operator starts it.

    ``--port 0`` lets the kernel pick the port (no race with other tests); it is read from the line the server
    announces. ``start()`` returns once ``/healthz`` answers 200; ``stop()`` sends SIGTERM and returns the exit
    code. Its output is drained on a thread (a full pipe would stall the server) and kept in ``lines``.
    """

    def __init__(self, model: str | Path, *args: str, python: str = PYTHON, env: dict[str, str] | None = None,
                 timeout: float = 60.0, launcher: list[str] | None = None) -> None:
        launcher = launcher or [python, "-m", "ignite_lenet.serve"]  # or a wrapper that runs the same module
        self.command = [*launcher, "--model", str(model), "--port", "0", *args]
        self.env = env or python_env()
        self.timeout = timeout
        self.lines: list[str] = []
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.port = 0

    def start(self) -> "ServerProcess":
        import re
        import threading
        import time
        import urllib.request

        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, bufsize=1)
        announced = threading.Event()

        def drain() -> None:
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))
                match = re.search(r"serving .* on (http://127\.0\.0\.1:(\d+))", line)
                if match and not announced.is_set():
                    self.url, self.port = match.group(1), int(match.group(2))
                    announced.set()
            announced.set()  # the process ended

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + self.timeout
        if not announced.wait(self.timeout) or not self.url:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "\n".join(self.lines))
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5) as response:
                    if response.status == 200:
                        self.ready_s = time.perf_counter() - self.started_at  # process start to the first 200
                        return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("the server never answered /healthz:\n" + "\n".join(self.lines))

    def stop(self, sig: int | None = None, timeout: float = 30.0) -> int:
        """SIGTERM (or ``sig``), wait, and the exit code (SIGKILL after ``timeout``)."""
        import signal

        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM if sig is None else sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def png_bytes(image, fmt: str = "PNG", **params) -> bytes:
    """A numpy array or PIL image encoded as an image file (PNG by default), in memory."""
    import io

    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def jpeg_with_scans(image, extra_scans: int) -> bytes:
    """A progressive JPEG of ``image`` with its last scan repeated ``extra_scans`` times more before the end of
    image: libjpeg decodes every scan over the whole image (a CPU bomb of a few bytes per scan, for a blank image)."""
    data = png_bytes(image, "JPEG", progressive=True)
    last, position = None, 2
    while data[position + 1] != 0xD9:  # walk the marker segments up to the end of image
        marker, start = data[position + 1], position
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:  # a scan: its entropy-coded data runs to the next marker (0xFF00 is a stuffed 0xFF)
            while data[position] != 0xFF or data[position + 1] == 0x00 or 0xD0 <= data[position + 1] <= 0xD7:
                position += 1
            last = data[start:position]
    assert last is not None, "not a progressive JPEG"
    return data[:position] + last * extra_scans + data[position:]


def png_with_chunks(png: bytes, chunks: int) -> bytes:
    """``png`` with ``chunks`` empty private ancillary chunks after its header (12 bytes each, read one by one)."""
    import struct
    import zlib

    empty = struct.pack(">I", 0) + b"zzZz" + struct.pack(">I", zlib.crc32(b"zzZz"))
    ihdr_end = 8 + 8 + 13 + 4  # signature, length and type, IHDR's 13 bytes, CRC
    return png[:ihdr_end] + empty * chunks + png[ihdr_end:]


def train_config(mnist_dir: Path, out: Path, **overrides):
    """A ``TrainConfig`` on the real MNIST copy, writing ``out``, pinned to the CPU: tests compare runs bit for bit,
    whatever ``--device auto`` would pick."""
    from ignite_lenet.config import TrainConfig

    return TrainConfig(**{"data_dir": str(mnist_dir), "download": False, "output_dir": str(out), "progress": False,
                          "device": "cpu", **overrides})


def history_without_times(run_dir: Path) -> dict:
    """A run's ``history.json`` less its wall-clock times: what two equal runs share exactly."""
    from ignite_lenet.files import read_json
    from ignite_lenet.spec import HISTORY

    history = read_json(run_dir / HISTORY)
    history.pop("epoch_time_s")
    return history


def saved_weights(path: Path, key: str = "model") -> dict:
    """The state_dict stored under ``key`` in a checkpoint file, read as the product reads it."""
    import torch

    return torch.load(path, weights_only=True)[key]
