"""What a run directory guarantees: one writer at a time, and an earlier run is never overwritten without
``--overwrite``.

``claim_run_dir`` is the first thing a run does with its directory (``job.build_training``, before its phase 1;
rank 0 of a torchrun job, for the job; the launcher of spawned ``--nproc-per-node`` processes, for all of them):
it takes the directory's lock, an OS-level ``flock`` on ``OUTPUT_DIR/.lock`` held until the run ends, and
refuses a fresh run into a directory holding an earlier run's files. A process that ends in any way (a crash,
a kill) loses its lock with it, so no lock is ever stale; the lock file names its holder (PID, host, command)
for the processes it refuses and is removed on release. Torch-free: the seeds sweep locks its directory too.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ignite_lenet.files import WriteError, make_dirs, temporary_files
from ignite_lenet.spec import RUN_FILES, RUN_LOCK, TENSORBOARD_DIR, TRAINING_CHECKPOINT

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock: the directory is not locked there
    fcntl = None  # type: ignore[assignment]

MAX_COMMAND = 500  # characters of the holder's command line shown in the one-line refusal
_NO_FD = -1  # "held" where the OS has no flock


class RunDirectoryInUse(OSError):
    """Another live process holds the run directory's lock (its PID and command are in the message)."""


def _command_line() -> str:
    """This process's command line as typed (``python3 -m ignite_lenet.train --seed 1``)."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    argv[0] = os.path.basename(argv[0])
    return shlex.join(argv)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_holder(fd: int, attempts: int = 10) -> dict[str, Any] | None:
    """What the holder wrote into the lock file; ``None`` when it has not written it yet (or it is unreadable)."""
    for attempt in range(attempts):
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode())
            if isinstance(holder, dict):
                return holder
        except (OSError, ValueError):
            pass
        time.sleep(0.01 * (attempt + 1))  # the holder locks first, then writes: give it a moment
    return None


class RunDirLock:
    """An exclusive lock on a directory (``flock`` on ``DIR/.lock``), held from ``acquire()`` to ``release()``.

    ``acquire()`` creates the directory if needed and raises ``RunDirectoryInUse`` naming the holder when another
    process (or another ``RunDirLock`` of this one) holds it; ``release()`` removes the lock file, and the
    directories ``acquire()`` created if they are still empty. Usable as a context manager.
    """

    def __init__(self, path: str | Path, flag: str = "--output-dir") -> None:
        self.path, self.flag = Path(path), flag
        self._fd: int | None = None
        self._created: list[Path] = []

    @property
    def file(self) -> Path:
        return self.path / RUN_LOCK

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunDirLock:
        if self.held:
            return self
        self._created = make_dirs(self.path)
        try:
            self._fd = self._lock() if fcntl is not None else _NO_FD
        except BaseException:
            self._remove_created()
            raise
        return self

    def _lock(self) -> int:
        while True:
            try:
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as e:
                raise WriteError.of(e, self.file) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunDirectoryInUse(self._in_use(holder)) from None
            except OSError as e:  # ENOLCK: a file system without locks
                os.close(fd)
                raise WriteError.of(e, self.file, "lock") from None
            if _same_file(fd, self.file):
                break
            os.close(fd)  # its holder removed it between our open() and our flock(): lock the file there now
        try:
            record = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(),
                      "since": datetime.datetime.now().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
        except OSError as e:
            os.close(fd)
            raise WriteError.of(e, self.file) from None
        return fd

    def _in_use(self, holder: dict[str, Any] | None) -> str:
        what = f"{self.flag} {self.path} is in use by"
        if holder is None:
            return f"{what} another process; wait for it to finish, or choose another {self.flag}"
        pid, host = holder.get("pid"), holder.get("host")
        if pid == os.getpid() and host == socket.gethostname():
            return (f"{what} this process: a Training from build_training() that has neither run nor been "
                    f"closed; call its run() or close() first")
        command = " ".join(str(holder.get("command", "")).split())
        if len(command) > MAX_COMMAND:
            command = command[: MAX_COMMAND - 3] + "..."
        where = f" on {host}" if host and host != socket.gethostname() else ""
        since = f" since {holder['since']}" if holder.get("since") else ""
        return (f"{what} process {pid}{where} ({command}){since}; wait for it to finish, or choose another "
                f"{self.flag}")

    def release(self) -> None:
        """Give the lock up (idempotent): the lock file goes first, then the lock, then empty new directories."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if fd != _NO_FD:
            try:
                if _same_file(fd, self.file):  # removed while locked: a process that opened it retries
                    os.unlink(self.file)
            except OSError:
                pass
            os.close(fd)
        self._remove_created()

    def _remove_created(self) -> None:
        for directory in reversed(self._created):  # deepest first, only while empty
            try:
                directory.rmdir()
            except OSError:
                break
        self._created = []

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a Training dropped without run() or close() frees its directory
        try:
            self.release()
        except Exception:
            pass


@dataclass(frozen=True)
class Contents:
    """What a directory holds when an earlier run (or sweep) wrote it: the files and folders ``--overwrite``
    removes, and the word for it in messages."""

    files: tuple[str, ...]
    dirs: tuple[str, ...] = ()
    what: str = "run"


RUN = Contents(RUN_FILES, (TENSORBOARD_DIR,))  # a run directory of python -m ignite_lenet.train


def earlier_run(path: str | Path, contents: Contents = RUN) -> list[str]:
    """The earlier run's files and folders (``name/``) in ``path``, in ``contents``' order."""
    path = Path(path)
    return ([name for name in contents.files if (path / name).exists()]
            + [f"{name}/" for name in contents.dirs if (path / name).is_dir()])


def refuse_earlier_run(path: str | Path, contents: Contents = RUN, flag: str = "--output-dir") -> None:
    """``FileExistsError``, in one line saying what to do, when ``path`` holds an earlier run's files."""
    found = earlier_run(path, contents)
    if not found:
        return
    shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    resume = "continue it with --resume, " if (Path(path) / TRAINING_CHECKPOINT).is_file() else ""
    raise FileExistsError(f"{flag} {path} holds an earlier {contents.what} ({shown}): {resume}start over with "
                          f"--overwrite (its files are removed), or choose another {flag}")


def claim_run_dir(path: str | Path, *, resume: bool = False, overwrite: bool = False, contents: Contents = RUN,
                  flag: str = "--output-dir") -> RunDirLock:
    """Lock ``path`` for this process (``RunDirLock``); unless resuming or overwriting, refuse it when it holds
    an earlier run's files (``refuse_earlier_run``). Returns the held lock; nothing is written but the lock file.

    Temporary files that a killed write left behind are removed: with the lock held, no one else is writing them.
    """
    lock = RunDirLock(path, flag).acquire()
    try:
        if not (resume or overwrite):
            refuse_earlier_run(path, contents, flag)
        for name in contents.files:
            for leftover in temporary_files(Path(path) / name):
                _remove(leftover)
    except BaseException:
        lock.release()
        raise
    return lock


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as e:
        raise WriteError.of(e, path if e.filename is None else e.filename, "remove") from None


def remove_earlier_run(path: str | Path, contents: Contents = RUN) -> list[str]:
    """``--overwrite``: remove the earlier run's files and folders from ``path`` (nothing else there) and return
    their names. ``WriteError`` names one that cannot be removed."""
    path = Path(path)
    found = earlier_run(path, contents)
    for name in found:
        _remove(path / name.rstrip("/"))
    return found


def how_to_continue(path: str | Path) -> str:
    """What a run that stopped early (Ctrl-C, a full disk) does next in ``path``: resume, or start over."""
    path = Path(path)
    if (path / TRAINING_CHECKPOINT).is_file():
        return "continue with --resume"
    if earlier_run(path):
        return "start over with --overwrite"
    return ""


def after_write_error(error: WriteError, path: str | Path) -> WriteError:
    """``error`` with a hint: what survived in ``path`` and what to do once the disk can be written again."""
    path = Path(path)
    fix = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (over the disk quota)",
           errno.EROFS: "make it writable", errno.EACCES: "make it writable", errno.EPERM: "make it writable"}
    then = how_to_continue(path) or "run again"
    step = f"{fix[error.errno]}, then {then}" if error.errno in fix else then
    if (path / TRAINING_CHECKPOINT).is_file():
        step = f"{TRAINING_CHECKPOINT} keeps the last saved epoch: {step}"
    elif earlier_run(path):
        step = f"no epoch was saved: {step}"
    error.hint = step
    return error


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


@contextmanager
def saying_what_next(path: str | Path) -> Iterator[None]:
    """A ``WriteError`` raised inside gets ``after_write_error``'s hint for the run directory ``path``; so does an
    ``OSError`` of a full or read-only disk that names no file (a background writer's, such as TensorBoard's),
    which becomes a ``WriteError`` naming ``path``."""
    try:
        yield
    except WriteError as e:
        raise after_write_error(e, path) from None
    except OSError as e:
        if e.filename is not None or e.errno not in DISK_ERRNOS:
            raise
        raise after_write_error(WriteError(e.errno, e.strerror, path, "write in"), path) from None
