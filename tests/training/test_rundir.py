"""``training.rundir`` and what a run directory guarantees.

The lock (held by one process at a time, never stale, naming its holder) and what counts as an earlier run
(refused, or removed by ``--overwrite``), torch-free and fast; then end to end on real MNIST: one writer at a
time, an earlier run never overwritten without ``--overwrite``, Ctrl-C as one line and a resume after it, and a
full or read-only disk as one line with the last good checkpoint intact and a resume once there is space (on a
real tmpfs when root)."""

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import PYTHON, assert_one_line_error, call_main, python_env, remount, small_tmpfs

from ignite_lenet.config import TrainConfig
from ignite_lenet.files import read_json
from ignite_lenet.seeds import main as seeds_main
from ignite_lenet.spec import BEST_MODEL, CONFIG, HISTORY, METRICS, RUN_LOCK, TRAINING_CHECKPOINT
from ignite_lenet.train import main
from ignite_lenet.training.job import train
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


# --- end to end, on real MNIST ------------------------------------------------------------------------------


def _flags(mnist_dir, out, *extra):
    return ["--data-dir", str(mnist_dir), "--no-download", "--device", "cpu", "--output-dir", str(out),
            "--no-progress", *extra]


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), process.communicate()[1] if process.poll() is not None else "timed out"


def test_a_second_writer_is_refused_naming_the_first_and_ctrl_c_is_our_line_alone(mnist_dir, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    out = sweep / "seed-1"
    flags = _flags(mnist_dir, out, "--epoch-length", "50", "--val-size", "1000", "--train-eval-size", "500")
    # 20 epochs: still training whatever this machine's load when Ctrl-C comes; the resume then stops at 2
    first = subprocess.Popen([PYTHON, "-m", "ignite_lenet.train", *flags, "--epochs", "20", "--seed", "1"],
                             env=python_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / TRAINING_CHECKPOINT, first)  # epoch 1 is saved; epoch 2 is training now
        config = (out / CONFIG).read_bytes()
        holder = f"is in use by process {first.pid} (python"
        attempts = {  # each is refused in phase 1, before it reads data or writes anything
            "another seed": (main, [*flags, "--seed", "2"]),
            "a resume": (main, [*flags, "--seed", "1", "--resume"]),
            "a start over": (main, [*flags, "--seed", "1", "--overwrite"]),
            "a seeds child": (seeds_main, ["--seeds", "1", *_flags(mnist_dir, sweep)]),
        }
        for name, (command, args) in attempts.items():
            code, _, err = call_main(command, args, capsys)
            assert_one_line_error(code, err, f"--output-dir {out} {holder}", "ignite_lenet.train", "--seed 1")
        assert first.poll() is None, "the first run ended before the refusals were checked"
        assert (out / CONFIG).read_bytes() == config and not (sweep / "seeds.json").exists()
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 130
    assert err == "python -m ignite_lenet.train: interrupted; continue with --resume\n"  # no Ignite line before it
    assert not (out / RUN_LOCK).exists() and not list(out.glob(".*.tmp*"))
    assert call_main(main, [*flags, "--epochs", "2", "--seed", "1", "--resume"], capsys)[0] == 0
    assert read_json(out / METRICS)["epochs_run"] == 2 and len(read_json(out / HISTORY)["lr"]) == 2


def test_an_earlier_run_is_kept_unless_overwrite_is_given(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    flags = _flags(mnist_dir, out, "--sanity-check", "--epochs", "1")
    assert call_main(main, [*flags, "--tensorboard"], capsys)[0] == 0
    (out / "notes.txt").write_text("the user's own file")
    before = _tree(out)
    code, _, err = call_main(main, [*flags, "--seed", "2"], capsys)
    assert_one_line_error(code, err, f"--output-dir {out} holds an earlier run", "continue it with --resume",
                          "start over with --overwrite", "or choose another --output-dir")
    cfg = TrainConfig.from_file(out / CONFIG)  # the Python API follows the same rule
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(cfg)
    assert _tree(out) == before
    result = train(cfg, seed=2, overwrite=True, tensorboard=False)
    stdout = capsys.readouterr().out
    assert f"--overwrite: removed the earlier run's {BEST_MODEL}" in stdout and "tensorboard/" in stdout
    assert not (out / "tensorboard").exists() and (out / "notes.txt").read_text() == "the user's own file"
    assert result.metrics["epochs_run"] == 1 and read_json(out / CONFIG)["seed"] == 2
    # what one command does with its directory is no setting of the run: --config config.json never resumes or
    # deletes anything by itself
    assert set(read_json(out / CONFIG)) == set(cfg.to_dict()) and not {"resume", "overwrite"} & set(cfg.to_dict())


def test_a_seeds_sweep_is_refused_before_any_seed_trains(mnist_dir, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    (sweep / "seed-1").mkdir(parents=True)
    (sweep / "seed-1" / CONFIG).write_text("{}")
    flags = _flags(mnist_dir, sweep, "--sanity-check", "--epochs", "1")
    args = ["--seeds", "0", "1", *flags]
    code, _, err = call_main(seeds_main, args, capsys)
    assert_one_line_error(code, err, f"--output-dir {sweep / 'seed-1'} holds an earlier run", "--overwrite")
    assert sorted(p.name for p in sweep.iterdir()) == ["seed-1"]  # seed 0 did not train first
    code, _, err = call_main(seeds_main, ["--seeds", "1", *flags, "--overwrite"], capsys)
    assert code == 0, err
    assert [run["seed"] for run in read_json(sweep / "seeds.json")["runs"]] == [1]
    assert read_json(sweep / "seed-1" / CONFIG)["seed"] == 1
    code, _, err = call_main(seeds_main, args, capsys)
    assert_one_line_error(code, err, f"--output-dir {sweep} holds an earlier sweep (seeds.json)")


def _one_line(err: str) -> str:
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.strip()


def test_a_full_disk_is_one_line_keeps_the_last_checkpoint_and_resumes_once_there_is_space(mnist_dir, tmp_path,
                                                                                         capsys):
    with small_tmpfs(tmp_path / "disk", "1300k") as disk:  # room for one epoch's checkpoints, not for two
        out = disk / "run"
        flags = _flags(mnist_dir, out, "--sanity-check", "--epochs", "3")
        done = subprocess.run([PYTHON, "-m", "ignite_lenet.train", *flags], env=python_env(), capture_output=True,
                              text=True, timeout=300)
        line = _one_line(done.stderr)
        assert done.returncode == 2
        assert line.startswith(f"python -m ignite_lenet.train: error: cannot write {out}/") and line.endswith(
            ".pt: No space left on device; training_checkpoint.pt keeps the last saved epoch: free some space, "
            "then continue with --resume"), line
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporary file, no lock
        assert torch.load(out / TRAINING_CHECKPOINT, weights_only=True)["trainer"]["iteration"] == 1  # epoch 1 of 1 batch
        assert set(torch.load(out / BEST_MODEL, weights_only=True)) >= {"model", "epoch"}
        remount(disk, "size=8m")
        code, _, err = call_main(main, [*flags, "--resume"], capsys)
        assert code == 0, err
        assert read_json(out / METRICS)["epochs_run"] == 3
        before = _tree(out)
        remount(disk, "ro")
        code, _, err = call_main(main, [*flags, "--epochs", "4", "--resume"], capsys)
        assert_one_line_error(code, err, f"cannot write {out / RUN_LOCK}: Read-only file system")
        code, _, err = call_main(main, _flags(mnist_dir, disk / "new", "--sanity-check"), capsys)
        assert_one_line_error(code, err, f"cannot create directory {disk / 'new'}: Read-only file system")
        assert _tree(out) == before


def test_a_disk_full_before_the_first_saved_epoch_says_to_start_over(mnist_dir, tmp_path, capsys):
    with small_tmpfs(tmp_path / "disk", "600k") as disk:  # best_model.pt fits, training_checkpoint.pt does not
        out = disk / "run"
        flags = _flags(mnist_dir, out, "--sanity-check", "--epochs", "2")
        code, _, err = call_main(main, flags, capsys)
        assert_one_line_error(code, err, f"cannot write {out / TRAINING_CHECKPOINT}: No space left on device; "
                              "no epoch was saved: free some space, then start over with --overwrite")
        assert sorted(p.name for p in out.iterdir()) == [BEST_MODEL, CONFIG, HISTORY]  # no temporary file


class _FullStream:
    """A standard output on a full disk."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        raise OSError(28, "No space left on device")


def test_a_log_on_a_full_disk_is_one_line(mnist_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdout", _FullStream())
    code, _, err = call_main(main, _flags(mnist_dir, tmp_path / "run", "--sanity-check", "--epochs", "1"), capsys)
    assert_one_line_error(code, err, "cannot write standard output: No space left on device")
    assert json.loads((tmp_path / "run" / CONFIG).read_text())["epochs"] == 1  # the run directory itself is fine
