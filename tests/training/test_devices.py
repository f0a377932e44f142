"""Device choice: this process's device, the placement of data-parallel processes (GPU count as an argument),
hiding GPUs from CPU processes, and ``--deterministic``'s global switches (set inside the block, restored after)."""

import json
import os
import subprocess
import textwrap

import pytest
import torch
from helpers import PYTHON, assert_one_line_error, python_env

from ignite_lenet.training import devices
from ignite_lenet.training.devices import (
    CUBLAS_WORKSPACE_CONFIG,
    ProcessPlacement,
    check_cublas_workspace,
    configure_determinism,
    gpus_hidden,
    place_processes,
    resolve_device,
)

CPU, GLOO_GPU = ProcessPlacement("gloo", gpus=False), ProcessPlacement("gloo", gpus=True)
NCCL_GPU = ProcessPlacement("nccl", gpus=True)
NEEDS_2 = "--nproc-per-node 2 needs 2 GPUs, this machine has {}; use --backend gloo for CPU processes"
CUDA_NEEDS_2 = ("--nproc-per-node 2 --device cuda needs 2 GPUs, this machine has {}; "
                "drop --device cuda for CPU processes")
NCCL_ON_CPU = "--backend nccl needs a GPU per process, but --device cpu was given; use --backend gloo for CPU processes"

# (backend, device) -> placement of 2 local processes for each GPU count 0, 1, 2, 4 (a string: the ValueError)
TABLE = {
    ("gloo", "auto"): [CPU, CPU, CPU, CPU],
    ("gloo", "cpu"): [CPU, CPU, CPU, CPU],
    ("gloo", "cuda"): [CUDA_NEEDS_2.format(0), CUDA_NEEDS_2.format(1), GLOO_GPU, GLOO_GPU],
    ("nccl", "auto"): [NEEDS_2.format(0), NEEDS_2.format(1), NCCL_GPU, NCCL_GPU],
    ("nccl", "cpu"): [NCCL_ON_CPU] * 4,
    ("nccl", "cuda"): [NEEDS_2.format(0), NEEDS_2.format(1), NCCL_GPU, NCCL_GPU],
    (None, "auto"): [CPU, CPU, NCCL_GPU, NCCL_GPU],  # torchrun without --backend
    (None, "cpu"): [CPU, CPU, CPU, CPU],
    (None, "cuda"): [NEEDS_2.format(0), NEEDS_2.format(1), NCCL_GPU, NCCL_GPU],
}
CASES = [(backend, device, gpus, expected[i]) for (backend, device), expected in TABLE.items()
         for i, gpus in enumerate((0, 1, 2, 4))]


@pytest.mark.parametrize("backend, device, gpus, expected", CASES)
def test_placement_of_two_processes(backend, device, gpus, expected):
    if isinstance(expected, str):
        with pytest.raises(ValueError) as error:
            place_processes(backend, device, nproc_per_node=2, gpu_count=gpus)
        assert str(error.value) == expected
    else:
        placement = place_processes(backend, device, nproc_per_node=2, gpu_count=gpus)
        assert placement == expected
        assert placement.hide_gpus == (not placement.gpus)


def test_the_issue_s_one_gpu_machine_is_refused_in_its_words():
    with pytest.raises(ValueError, match="^--nproc-per-node 2 needs 2 GPUs, this machine has 1; "
                                         "use --backend gloo for CPU processes$"):
        place_processes("nccl", "auto", nproc_per_node=2, gpu_count=1)
    # the same machine runs the job as two CPU processes with gloo
    assert place_processes("gloo", "auto", nproc_per_node=2, gpu_count=1) == CPU


def test_one_process_per_gpu_and_bad_counts():
    assert place_processes("nccl", "auto", nproc_per_node=1, gpu_count=1) == NCCL_GPU
    assert place_processes("nccl", "auto", nproc_per_node=4, gpu_count=4) == NCCL_GPU
    with pytest.raises(ValueError, match="needs 1 GPU, this machine has 0"):
        place_processes("nccl", "cuda", nproc_per_node=1, gpu_count=0)
    with pytest.raises(ValueError, match="positive"):
        place_processes("gloo", "auto", nproc_per_node=0, gpu_count=0)


def test_resolve_device_outside_a_distributed_job():
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda" and resolve_device("cuda").type == "cuda"
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="--device cuda: no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.parametrize("before", [None, "0,1"])
def test_gpus_hidden_sets_and_restores_the_variable(monkeypatch, before):
    if before is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", before)
    with gpus_hidden(True):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
        # a process started inside the block sees no GPU, whatever this machine has
        code = "import torch; print(torch.cuda.is_available(), torch.cuda.device_count())"
        seen = subprocess.run([PYTHON, "-c", code], env=python_env(), capture_output=True, text=True, timeout=120)
        assert seen.stdout.split() == ["False", "0"], seen.stderr
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before
    with gpus_hidden(False):
        assert os.environ.get("CUDA_VISIBLE_DEVICES") == before


def _flags():
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


def test_determinism_is_switched_on_inside_and_restored_after(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    before = _flags()
    with configure_determinism(True):
        assert _flags() == (True, False, False, True, CUBLAS_WORKSPACE_CONFIG)
        # a nondeterministic-only op now fails instead of running (index_add_ on CPU is deterministic: use one that
        # has no deterministic implementation anywhere)
        with pytest.raises(RuntimeError, match="deterministic"):
            torch.zeros(3).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]), accumulate=False)
    assert _flags() == before
    with configure_determinism(False):
        assert _flags() == before


def test_determinism_keeps_a_cublas_setting_the_user_chose(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with configure_determinism(True, warn_only=True):
        assert _flags()[1] is True and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8" and not torch.are_deterministic_algorithms_enabled()


def test_determinism_is_restored_when_the_block_raises():
    before = _flags()
    with pytest.raises(KeyError), configure_determinism(True):
        raise KeyError("boom")
    assert _flags() == before


def _python(code: str, **env: str | None) -> subprocess.CompletedProcess:
    """``python -c code`` in a fresh process whose environment is this one's with ``env`` applied (None: unset)."""
    environment = python_env()
    for key, value in env.items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    return subprocess.run([PYTHON, "-c", textwrap.dedent(code)], env=environment, capture_output=True, text=True,
                          timeout=300)


def test_importing_the_package_sets_cublas_default_unless_the_user_did():
    code = "import os, sys, ignite_lenet; print(os.environ.get('CUBLAS_WORKSPACE_CONFIG'), 'torch' in sys.modules)"
    assert _python(code, CUBLAS_WORKSPACE_CONFIG=None).stdout.split() == [CUBLAS_WORKSPACE_CONFIG, "False"]
    assert _python(code, CUBLAS_WORKSPACE_CONFIG=":16:8").stdout.split() == [":16:8", "False"]


def test_cublas_check_asks_cuda_only_once_it_ran_and_refuses_in_one_line(monkeypatch):
    gemms = []
    monkeypatch.setattr(devices, "_deterministic_gemm", lambda device: gemms.append(device))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    check_cublas_workspace("cuda")  # no CUDA work yet: the first GEMM comes after the variable is set
    check_cublas_workspace("cpu")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    check_cublas_workspace("cpu")
    assert gemms == []
    check_cublas_workspace("cuda")
    assert gemms == [torch.device("cuda")]

    def refused(device):  # what torch raises at a deterministic GEMM when its first GEMM saw no variable
        raise RuntimeError("Deterministic behavior was enabled with either `torch.use_deterministic_algorithms(True)` "
                           "or `at::Context::setDeterministicAlgorithms(true)`, but this operation is not "
                           "deterministic because it uses CuBLAS and you have CUDA >= 10.2. To enable "
                           "deterministic behavior in this case, you must set an environment variable before "
                           "running your PyTorch application: CUBLAS_WORKSPACE_CONFIG=:4096:8 or "
                           "CUBLAS_WORKSPACE_CONFIG=:16:8.")

    monkeypatch.setattr(devices, "_deterministic_gemm", refused)
    with pytest.raises(ValueError) as error:
        check_cublas_workspace("cuda:0")
    assert_one_line_error(2, str(error.value) + "\n", "--deterministic", "CUBLAS_WORKSPACE_CONFIG=:4096:8")

    def out_of_memory(device):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(devices, "_deterministic_gemm", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):  # other failures are not ours to rename
        check_cublas_workspace("cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_deterministic_runs_after_other_cuda_work_in_one_process(mnist_dir, tmp_path):
    """A notebook: train(), then train(deterministic=True) twice, identical; and CUDA work before the package is
    imported without the variable: one line, not a RuntimeError mid-run."""
    notebook = _python(f"""
        import json
        from ignite_lenet import train
        kw = dict(data_dir={str(mnist_dir)!r}, download=False, device="cuda", epochs=1, epoch_length=20,
                  progress=False)
        train(output_dir={str(tmp_path / "a")!r}, **kw)
        runs = [train(output_dir={str(tmp_path)!r} + f"/d{{i}}", deterministic=True, **kw) for i in range(2)]
        strip = lambda h: {{k: v for k, v in h.items() if k != "epoch_time_s"}}
        print(json.dumps([strip(runs[0].history) == strip(runs[1].history), runs[0].metrics["device"]]))
    """, CUBLAS_WORKSPACE_CONFIG=None)
    assert notebook.returncode == 0, notebook.stderr[-3000:]
    same, device = json.loads(notebook.stdout.strip().splitlines()[-1])
    assert same and device.startswith("cuda")
    late = _python(f"""
        import torch
        a = torch.ones(4, 4, device="cuda")
        a @ a  # cuBLAS's first GEMM in this process, without CUBLAS_WORKSPACE_CONFIG
        from ignite_lenet.train import main
        raise SystemExit(main(["--data-dir", {str(mnist_dir)!r}, "--no-download", "--device", "cuda",
                               "--deterministic", "--epochs", "1", "--epoch-length", "5", "--no-progress",
                               "--output-dir", {str(tmp_path / "late")!r}]))
    """, CUBLAS_WORKSPACE_CONFIG=None)
    if _cublas_checks_its_workspace():
        assert_one_line_error(late.returncode, late.stderr, "--deterministic", "CUBLAS_WORKSPACE_CONFIG")
    else:  # this torch no longer refuses (PyTorch #161749): nothing to refuse, the run trains
        assert late.returncode == 0, late.stderr[-3000:]


def _cublas_checks_its_workspace() -> bool:
    """Whether this torch refuses a deterministic CUDA matrix product without ``CUBLAS_WORKSPACE_CONFIG`` (the
    check PyTorch removed in #161749: cuBLAS's per-stream workspaces are deterministic without it)."""
    probe = _python("""
        import torch
        torch.use_deterministic_algorithms(True)
        a = torch.ones(4, 4, device="cuda")
        try:
            a @ a
        except RuntimeError as e:
            raise SystemExit(3 if "CUBLAS_WORKSPACE_CONFIG" in str(e) else 1)
    """, CUBLAS_WORKSPACE_CONFIG=None)
    assert probe.returncode in (0, 3), probe.stderr[-3000:]
    return probe.returncode == 3
