"""keep_freed_memory: no page faults in a CPU training step, the same results, and the user's own choice wins."""

import subprocess
import sys

import pytest
import torch
from helpers import PYTHON, python_env

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

STEP_FAULTS = """
import resource, sys
from ignite_lenet.allocator import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "on" else None)
import torch, torch.nn.functional as F
from ignite_lenet.model import LeNet5, optimize_layout
torch.manual_seed(0)
model = optimize_layout(LeNet5(), "cpu")
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
x = torch.rand(256, 1, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (256,))
def step():
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def _python(script: str, *args: str, **env: str) -> list[str]:
    done = subprocess.run([PYTHON, "-c", script, *args], env={**python_env(), **env}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_training_step_stops_page_faulting():
    took, faults_on = _python(STEP_FAULTS, "on")
    _, faults_off = _python(STEP_FAULTS, "off")
    assert took == "True"
    # glibc's defaults: fresh pages for the step's MB-sized tensors (1,400-4,200 faults a step, measured);
    # kept: 0-25 (the thread pool's first touches)
    assert float(faults_on) < 200 < float(faults_off), (faults_on, faults_off)


def test_the_environment_decides_when_it_says_something():
    script = "from ignite_lenet.allocator import keep_freed_memory; print(keep_freed_memory())"
    assert _python(script) == ["True"]
    assert _python(script, MALLOC_TRIM_THRESHOLD_="131072") == ["False"]
    assert _python(script, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=65536") == ["False"]


def test_results_are_the_same_with_and_without(mnist_dir, tmp_path):
    script = f"""
import sys, torch
from ignite_lenet.allocator import keep_freed_memory
if sys.argv[1] == "on":
    assert keep_freed_memory()
from ignite_lenet import TrainConfig, train
train(TrainConfig(data_dir=r"{mnist_dir}", download=False, output_dir=sys.argv[2], device="cpu", recipe="fast",
                  epochs=1, epoch_length=40, progress=False))
"""
    for setting in ("on", "off"):
        _python(script, setting, str(tmp_path / setting))
    on, off = (torch.load(tmp_path / s / "best_model.pt", weights_only=True)["model"] for s in ("on", "off"))
    assert on.keys() == off.keys() and all(torch.equal(on[k], off[k]) for k in on)
