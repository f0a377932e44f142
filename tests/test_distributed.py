"""Data-parallel training with ignite.distributed on real MNIST: spawned, under torchrun, as two "nodes"."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import PYTHON, python_env, truncated_mnist_copy
from ignite_lenet import artifacts, checkpoints
from ignite_lenet.config import TrainConfig
from ignite_lenet.data import InMemoryLoader
from ignite_lenet.distributed import resolve_backend, threads_per_process
from ignite_lenet.engines import create_evaluator
from ignite_lenet.train import main

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
    assert names == sorted([artifacts.BEST_MODEL, artifacts.TRAINING_CHECKPOINT, artifacts.HISTORY, artifacts.CURVES,
                            artifacts.METRICS, artifacts.CONFIG, artifacts.CONFUSION_MATRIX])
    metrics = artifacts.read_json(out / artifacts.METRICS)
    assert metrics["world_size"] == world_size and metrics["epochs_run"] == 2
    model, best = checkpoints.load_best_model(out / artifacts.BEST_MODEL)  # loads like a single-process run's
    single = create_evaluator(model).run(InMemoryLoader(mnist_data.val, 1000)).metrics
    assert single["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-9)
    assert single["loss"] == pytest.approx(best["val_loss"], rel=1e-4)
    test = create_evaluator(model).run(InMemoryLoader(mnist_data.test, 1000)).metrics
    assert test["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    assert best["val_accuracy"] > 0.85
    # every process saw 150 iterations per epoch of its own shard: 2 x 150 x 32 images per epoch in all
    trainer = torch.load(out / artifacts.TRAINING_CHECKPOINT, weights_only=True)["trainer"]
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
        with pytest.raises(ValueError, match="nccl needs CUDA"):
            resolve_backend(TrainConfig(backend="nccl"))
    assert resolve_backend(TrainConfig(backend="gloo")) == "gloo"
    assert threads_per_process(2) >= 1
