"""``training.rundir``: the run directory's lock (held by one process at a time, never stale, naming its holder)
and what counts as an earlier run (refused, or removed by ``--overwrite``). Torch-free and fast."""

import json
import os
import signal
import subprocess

import pytest
from helpers import PYTHON

from ignite_lenet.spec import BEST_MODEL, CONFIG, HISTORY, RUN_LOCK, TRAINING_CHECKPOINT
from ignite_lenet.training.rundir import (
    RunDirectoryInUse,
    RunDirLock,
    claim_run_dir,
    how_to_continue,
    refuse_earlier_run,
    remove_earlier_run,
)

HOLD = ("import sys, time; from ignite_lenet.training.rundir import RunDirLock; "
        "lock = RunDirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(300)")


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path/run``'s lock (it says 'held' once it does)."""
    process = subprocess.Popen([PYTHON, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "held\n"
    yield process
    process.kill()
    process.wait()


def test_another_live_process_is_named_and_a_killed_one_leaves_no_stale_lock(tmp_path, holder):
    run = tmp_path / "run"
    record = json.loads((run / RUN_LOCK).read_text())
    assert record["pid"] == holder.pid and "RunDirLock" in record["command"]
    with pytest.raises(RunDirectoryInUse) as refused:
        RunDirLock(run).acquire()
    message = str(refused.value)
    assert message.startswith(f"--output-dir {run} is in use by process {holder.pid} (python")
    assert "wait for it to finish, or choose another --output-dir" in message and "\n" not in message
    holder.send_signal(signal.SIGKILL)  # no clean-up at all: the OS releases the lock with the process
    holder.wait()
    assert (run / RUN_LOCK).exists()
    with RunDirLock(run) as lock:
        assert lock.held and json.loads((run / RUN_LOCK).read_text())["pid"] == os.getpid()
    assert not (run / RUN_LOCK).exists()


def test_one_process_cannot_hold_a_directory_twice_and_release_tidies_up(tmp_path):
    run = tmp_path / "new" / "run"
    first = RunDirLock(run).acquire()
    with pytest.raises(RunDirectoryInUse, match="in use by this process: .* call its run\\(\\) or close\\(\\)"):
        RunDirLock(run).acquire()
    first.release()
    first.release()  # idempotent
    assert not (tmp_path / "new").exists()  # the directories it created, left empty, are gone again
    with RunDirLock(run):
        (run / CONFIG).write_text("{}")
    assert sorted(p.name for p in run.iterdir()) == [CONFIG]  # a directory with a run in it stays
    with RunDirLock(run) as lock:  # a lock can be taken again after its release
        assert lock.held


def test_an_earlier_run_is_refused_with_what_to_do_and_overwrite_removes_only_its_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    claim_run_dir(run).release()  # a user's own file is no run
    for name in (CONFIG, HISTORY, BEST_MODEL, TRAINING_CHECKPOINT):
        (run / name).write_text("x")
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out").write_text("x")
    (run / f".{HISTORY[:-5]}.abc123.tmp.json").write_text("left by a kill mid-write")
    with pytest.raises(FileExistsError) as refused:
        claim_run_dir(run)
    assert str(refused.value) == (
        f"--output-dir {run} holds an earlier run (best_model.pt, training_checkpoint.pt, history.json and 2 more): "
        f"continue it with --resume, start over with --overwrite (its files are removed), or choose another "
        f"--output-dir")
    assert not (run / RUN_LOCK).exists() and how_to_continue(run) == "continue with --resume"
    with claim_run_dir(run, resume=True):  # resuming keeps the run and drops what a killed write left
        assert sorted(p.name for p in run.iterdir()) == sorted(
            [RUN_LOCK, "notes.txt", CONFIG, HISTORY, BEST_MODEL, TRAINING_CHECKPOINT, "tensorboard"])
    with claim_run_dir(run, overwrite=True):
        assert remove_earlier_run(run) == [BEST_MODEL, TRAINING_CHECKPOINT, HISTORY, CONFIG, "tensorboard/"]
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"] and how_to_continue(run) == ""
    (run / CONFIG).write_text("x")  # a run stopped before its first epoch was saved: nothing to resume
    with pytest.raises(FileExistsError, match=r"\(config.json\): start over with --overwrite"):
        refuse_earlier_run(run)
    assert how_to_continue(run) == "start over with --overwrite"


def test_the_lock_module_imports_without_torch():
    done = subprocess.run([PYTHON, "-c", "import sys, ignite_lenet.training.rundir, ignite_lenet.train; "
                           "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr  # the command lines parse flags without torch
