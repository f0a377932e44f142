"""Data-parallel training with ignite.distributed on real MNIST: spawned, under torchrun, as two "nodes"."""

import gc
import json
import os
import socket
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from helpers import PYTHON, assert_one_line_error, python_env, truncated_mnist_copy

from ignite_lenet import checkpoints
from ignite_lenet.config import TrainConfig
from ignite_lenet.files import read_json
from ignite_lenet.spec import (
    BEST_MODEL,
    CONFIG,
    CONFUSION_MATRIX,
    CURVES,
    HISTORY,
    METRICS,
    RUN_LOCK,
    TRAINING_CHECKPOINT,
)
from ignite_lenet.train import main
from ignite_lenet.training.data import InMemoryLoader
from ignite_lenet.training.distributed import _worker, failure_line, launch, place, threads_per_process
from ignite_lenet.training.engines import create_evaluator

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(mnist_dir, out, *extra):
    return ["--data-dir", str(mnist_dir), "--no-download", "--output-dir", str(out), "--epochs", "2",
            "--epoch-length", "150", "--no-progress", *extra]


def _check_run(out: Path, mnist_data, world_size: int):
    """One set of artifacts whose validation metrics equal a single-process evaluation of the same weights."""
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([BEST_MODEL, TRAINING_CHECKPOINT, HISTORY, CURVES,
                            METRICS, CONFIG, CONFUSION_MATRIX])
    metrics = read_json(out / METRICS)
    assert metrics["world_size"] == world_size and metrics["epochs_run"] == 2
    model, best = checkpoints.load_best_model(out / BEST_MODEL)  # loads like a single-process run's
    single = create_evaluator(model).run(InMemoryLoader(mnist_data.val, 1000)).metrics
    assert single["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-9)
    assert single["loss"] == pytest.approx(best["val_loss"], rel=1e-4)
    test = create_evaluator(model).run(InMemoryLoader(mnist_data.test, 1000)).metrics
    assert test["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    assert best["val_accuracy"] > 0.85
    # every process saw 150 iterations per epoch of its own shard: 2 x 150 x 32 images per epoch in all
    trainer = torch.load(out / TRAINING_CHECKPOINT, weights_only=True)["trainer"]
    assert trainer["iteration"] == 300


def test_two_spawned_gloo_processes_train_one_model(mnist_dir, mnist_data, tmp_path):
    done = subprocess.run([PYTHON, "-m", "ignite_lenet.train", *_train_args(mnist_dir, tmp_path),
                           "--backend", "gloo", "--nproc-per-node", "2"],
                          env=python_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test accuracy") == 1  # only rank 0 logs
    assert "2 process(es)" in done.stdout
    _check_run(tmp_path, mnist_data, world_size=2)


def test_resume_of_a_distributed_run(mnist_dir, mnist_data, tmp_path):
    base = _train_args(mnist_dir, tmp_path, "--backend", "gloo", "--nproc-per-node", "2")
    assert main([*base[:-5], "--epochs", "1", "--epoch-length", "150", "--no-progress"]) == 0
    assert main([*base, "--resume"]) == 0
    _check_run(tmp_path, mnist_data, world_size=2)


def test_torchrun_launch(mnist_dir, mnist_data, tmp_path):
    done = subprocess.run([TORCHRUN, "--nproc-per-node", "2", "--master-port", str(_free_port()),
                           "-m", "ignite_lenet.train", *_train_args(mnist_dir, tmp_path), "--backend", "gloo"],
                          env=python_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_run(tmp_path, mnist_data, world_size=2)


@pytest.mark.slow
def test_two_local_nodes_under_torchrun(mnist_dir, mnist_data, tmp_path):
    port = str(_free_port())
    nodes = [subprocess.Popen([TORCHRUN, "--nnodes", "2", "--node-rank", str(rank), "--master-addr", "127.0.0.1",
                               "--master-port", port, "--nproc-per-node", "1", "-m", "ignite_lenet.train",
                               *_train_args(mnist_dir, tmp_path), "--backend", "gloo"],
                              env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    _check_run(tmp_path, mnist_data, world_size=2)


def _two_nodes(mnist_dir, dirs, *extra) -> list[tuple[int, str, str]]:
    """Two torchrun "nodes" of one process each on loopback (gloo), node k writing into ``dirs[k]``."""
    port = str(_free_port())
    nodes = [subprocess.Popen([TORCHRUN, "--nnodes", "2", "--node-rank", str(rank), "--master-addr", "127.0.0.1",
                               "--master-port", port, "--nproc-per-node", "1", "-m", "ignite_lenet.train",
                               "--data-dir", str(mnist_dir), "--no-download", "--output-dir", str(dirs[rank]),
                               "--epoch-length", "40", "--no-progress", "--backend", "gloo", *extra],
                              env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    return [(node.returncode, out, err) for node, (out, err) in zip(nodes, outputs)]


@pytest.mark.slow
def test_two_nodes_that_share_no_disk_train_test_and_resume(mnist_dir, tmp_path):
    # each node has its own --output-dir (cloud machines without shared storage): rank 0 alone writes and reads
    # the run; the best weights for the test and the checkpoint of --resume reach node 1 through idist.broadcast
    dirs = [tmp_path / "node0", tmp_path / "node1"]
    first = _two_nodes(mnist_dir, dirs, "--epochs", "1")
    assert [code for code, _, _ in first] == [0, 0], first[0][2][-2000:] + first[1][2][-2000:]
    assert sorted(p.name for p in dirs[0].iterdir()) == sorted([BEST_MODEL, TRAINING_CHECKPOINT, HISTORY, CURVES,
                                                                METRICS, CONFIG, CONFUSION_MATRIX])
    assert not dirs[1].exists() or not any(dirs[1].iterdir())  # node 1 wrote nothing
    assert read_json(dirs[0] / METRICS)["world_size"] == 2

    again = _two_nodes(mnist_dir, dirs, "--epochs", "2", "--resume")
    assert [code for code, _, _ in again] == [0, 0], again[0][2][-2000:] + again[1][2][-2000:]
    assert "resumed from" in again[0][1] and "at epoch 1" in again[0][1]
    metrics = read_json(dirs[0] / METRICS)
    assert metrics["epochs_run"] == 2 and metrics["world_size"] == 2
    assert torch.load(dirs[0] / TRAINING_CHECKPOINT, weights_only=True)["trainer"]["iteration"] == 80
    assert not dirs[1].exists() or not any(dirs[1].iterdir())


def test_two_nodes_with_a_directory_each_never_refuse_each_other(mnist_dir, tmp_path):
    """Two one-process "nodes" started as torchrun starts its workers (RANK, WORLD_SIZE, MASTER_ADDR, ...), each
    with its own --output-dir: rank 0 holds the job's directory; node 1's, which even holds an earlier run, is
    neither refused nor written (the shared-directory case is test_two_local_nodes_under_torchrun)."""
    dirs = [tmp_path / "node0", tmp_path / "node1"]
    dirs[1].mkdir()
    (dirs[1] / CONFIG).write_text('{"an": "earlier run"}')
    port = str(_free_port())
    nodes = [subprocess.Popen([PYTHON, "-m", "ignite_lenet.train", "--data-dir", str(mnist_dir), "--no-download",
                               "--output-dir", str(out), "--sanity-check", "--epochs", "1", "--no-progress",
                               "--backend", "gloo"],
                              env={**python_env(), "RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": "2",
                                   "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for rank, out in enumerate(dirs)]
    errors = [node.communicate(timeout=300)[1] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], errors
    assert read_json(dirs[0] / METRICS)["world_size"] == 2 and not (dirs[0] / RUN_LOCK).exists()
    assert sorted(p.name for p in dirs[1].iterdir()) == [CONFIG]


def test_a_worker_frees_what_training_left_in_cycles_before_the_group_is_destroyed():
    """The trained DistributedDataParallel model lives on in the engines' reference cycles (its reducer holds the
    process group); a worker frees it before idist.finalize, not the collector at interpreter exit, when rank 0
    has taken the store down (a rank then aborted: "terminate called without an active exception")."""
    left: list[weakref.ref] = []

    def train(cfg):
        model = torch.nn.Linear(2, 2)
        model.cycle = [model]  # as an engine's handlers hold the model that their closures name
        left.append(weakref.ref(model))
        return {"trained": True}

    gc.disable()  # only the worker may collect here
    try:
        assert _worker(0, train, TrainConfig(device="cpu", threads=1)) == {"trained": True}
        assert left[0]() is None
    finally:
        gc.enable()


def test_a_spawned_job_is_refused_before_it_spawns(mnist_dir, tmp_path, capsys):
    (tmp_path / TRAINING_CHECKPOINT).write_bytes(b"an earlier run")
    code = main(["--data-dir", str(mnist_dir), "--no-download", "--output-dir", str(tmp_path), "--backend", "gloo",
                 "--nproc-per-node", "2", "--no-progress"])
    assert_one_line_error(code, capsys.readouterr().err, f"--output-dir {tmp_path} holds an earlier run",
                          "--resume", "--overwrite")
    assert sorted(p.name for p in tmp_path.iterdir()) == [TRAINING_CHECKPOINT]


def test_a_failing_rank_ends_the_job_with_one_line(mnist_dir, tmp_path, capsys):
    # the files are present (the launcher's check passes), but every rank finds one truncated when loading it
    corrupt = truncated_mnist_copy(mnist_dir, tmp_path / "corrupt")
    code = main(["--data-dir", str(corrupt), "--no-download", "--output-dir", str(tmp_path / "out"),
                 "--backend", "gloo", "--nproc-per-node", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "truncated" in err and err.count("\n") == 1, err


def test_missing_data_is_reported_before_spawning(tmp_path, capsys):
    code = main(["--data-dir", str(tmp_path), "--no-download", "--output-dir", str(tmp_path / "out"),
                 "--backend", "gloo", "--nproc-per-node", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "not found in" in err and err.count("\n") == 1, err


def test_backend_checks():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="^--nproc-per-node 2 needs 2 GPUs, this machine has 0; use --backend"):
            place(TrainConfig(backend="nccl", nproc_per_node=2))
    assert place(TrainConfig(backend="gloo")).backend == "gloo"
    placement = place(TrainConfig(backend="gloo", nproc_per_node=2))
    assert placement.backend == "gloo" and placement.hide_gpus  # CPU processes, whatever the machine has
    assert threads_per_process(2) >= 1


def test_nccl_with_too_few_gpus_is_refused_before_spawning(tmp_path, capsys):
    gpus = torch.cuda.device_count()
    code = main(["--data-dir", str(tmp_path), "--no-download", "--output-dir", str(tmp_path / "out"),
                 "--backend", "nccl", "--nproc-per-node", str(gpus + 1), "--no-progress"])
    err = capsys.readouterr().err
    # refused before the data check and before any process exists (or: this torch build has no nccl at all)
    assert code == 2 and err.count("\n") == 1, err
    assert (f"--nproc-per-node {gpus + 1} needs {gpus + 1} GPU" in err
            and f"this machine has {gpus}; use --backend gloo for CPU processes" in err) or "not available" in err, err


# What CUDA reports for `torch.cuda.set_device(1)` on a one-GPU machine, as torch.multiprocessing carries it
CUDA_FAILURE = """

-- Process 1 terminated with the following error:
Traceback (most recent call last):
  File "/venv/lib/python3.12/site-packages/torch/multiprocessing/spawn.py", line 90, in _wrap
    fn(i, *args)
  File "/venv/lib/python3.12/site-packages/ignite/distributed/comp_models/native.py", line 137, in _create_from_backend
    torch.cuda.set_device(self._local_rank)
    ~~~~~~~~~~~~~~~~~~~~~^^^^^^^^^^^^^^^^^^
torch.AcceleratorError: CUDA error: invalid device ordinal
GPU device may be out of range, do you have enough GPUs?
Search for `cudaErrorInvalidDevice' in https://docs.nvidia.com/cuda/cuda-runtime-api/group__cuda__runtime__api\
__structs__enums.html for more information.
CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below might be incorrect.
For debugging consider passing CUDA_LAUNCH_BLOCKING=1
Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.
"""

CHAINED_FAILURE = """
-- Process 0 terminated with the following error:
Traceback (most recent call last):
  File "a.py", line 3, in f
    open(path)
FileNotFoundError: [Errno 2] No such file or directory: 'x'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "a.py", line 5, in f
    raise RuntimeError(
RuntimeError:
  the data went missing
For debugging consider passing CUDA_LAUNCH_BLOCKING=1
"""


@pytest.mark.parametrize("text, expected", [
    (CUDA_FAILURE, "torch.AcceleratorError: CUDA error: invalid device ordinal"),
    (CHAINED_FAILURE, "RuntimeError: the data went missing"),
    ("Traceback (most recent call last):\n  File \"w.py\", line 1\n"
     "ignite_lenet.training.distributed.WorkerError: train-labels-idx1-ubyte is truncated\n",
     "train-labels-idx1-ubyte is truncated"),
    ("process 1 terminated with signal SIGKILL", "process 1 terminated with signal SIGKILL"),
    ("CUDA error: out of memory\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.",
     "CUDA error: out of memory"),
])
def test_the_line_that_says_what_failed(text, expected):
    assert failure_line(text) == expected


def fail_like_cuda_on_rank_1(cfg: TrainConfig) -> dict:
    """A train function for spawned processes: rank 1 fails with CUDA's multi-line message."""
    import time

    import ignite.distributed as idist

    idist.barrier()
    if idist.get_rank() == 1:
        raise RuntimeError(CUDA_FAILURE.split("torch.AcceleratorError: ", 1)[1])
    time.sleep(300)  # rank 0 waits, without failing itself, until the launcher ends it
    return {}


def report_devices(cfg: TrainConfig) -> dict:
    """A train function for spawned processes: what each one sees."""
    import ignite.distributed as idist

    from ignite_lenet.training.devices import resolve_device

    report = {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "cuda": torch.cuda.is_available(),
              "device": str(resolve_device(cfg.device)), "idist": str(idist.device())}
    Path(cfg.output_dir, f"rank{idist.get_rank()}.json").write_text(json.dumps(report))
    return report


def test_a_rank_failing_with_a_multi_line_cuda_error_is_named_in_one_line(mnist_dir, tmp_path):
    cfg = TrainConfig(data_dir=str(mnist_dir), download=False, output_dir=str(tmp_path), backend="gloo",
                      nproc_per_node=2)
    with pytest.raises(ValueError) as error:
        launch(fail_like_cuda_on_rank_1, cfg)
    assert str(error.value) == "process 1 failed: RuntimeError: CUDA error: invalid device ordinal"


def test_gloo_processes_see_no_gpu_and_train_on_cpu(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cfg = TrainConfig(data_dir=str(mnist_dir), download=False, output_dir=str(tmp_path), backend="gloo",
                      nproc_per_node=2)
    launch(report_devices, cfg)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # the launcher's environment is restored
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report == {"visible": "", "cuda": False, "device": "cpu", "idist": "cpu"}
