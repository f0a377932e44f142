"""A command run without its optional extra (a serving-only install) says in one line which extra to install.

The real serving-only install is `.ci/run`'s second venv; here the training modules are made unimportable.
"""

import subprocess

import pytest
from helpers import PYTHON, assert_one_line_error, python_env

from ignite_lenet.cmdline import EXTRA_MODULES

TRAINING_COMMANDS = {
    "ignite_lenet.train": ["--epochs", "1", "--output-dir", "{tmp}/run"],
    "ignite_lenet.export": ["--checkpoint", "{tmp}/run", "--output-dir", "{tmp}/exports"],
    "ignite_lenet.seeds": ["--seeds", "0", "--epochs", "1", "--output-dir", "{tmp}/seeds"],
    "ignite_lenet.bench_report": ["{tmp}/results.json"],
}


def run_without(modules: tuple[str, ...], module: str, args: list[str]) -> subprocess.CompletedProcess:
    script = ("import runpy, sys\n"
              f"for name in {list(modules)!r}:\n    sys.modules[name] = None  # importing it now fails\n"
              f"sys.argv = [{module!r}, *{args!r}]\n"
              f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n")
    return subprocess.run([PYTHON, "-c", script], env=python_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", TRAINING_COMMANDS)
def test_a_training_command_without_the_training_extra_names_it(module, tmp_path):
    args = [a.format(tmp=tmp_path) for a in TRAINING_COMMANDS[module]]
    result = run_without(EXTRA_MODULES["train"], module, args)
    assert_one_line_error(result.returncode, result.stderr, "this command needs the training extra",
                          'pip install "ignite_lenet[train]"', "(missing module", "torch")
    help_result = run_without(EXTRA_MODULES["train"], module, ["--help"])  # parsing needs no torch
    assert help_result.returncode == 0 and "usage:" in help_result.stdout, help_result.stderr



def test_the_server_without_the_serving_extra_names_it(tmp_path):
    result = run_without(EXTRA_MODULES["serve"], "ignite_lenet.serve", ["--model", str(tmp_path / "m.onnx")])
    assert_one_line_error(result.returncode, result.stderr, "this command needs the serving extra",
                          'pip install "ignite_lenet[serve]"', "(missing modules fastapi, ")
