"""``ignite_lenet.cmdline``, the command-line toolkit: a settings dataclass as flags (help, defaults, sections,
ranges checked at parse time and again on the instance), argparse types with one-line errors, and a command run
without its optional extra saying in one line which extra to install (the real serving-only install is
`.ci/run`'s second venv; here the training modules are made unimportable).
"""

import argparse
import math
import subprocess
import sys
from dataclasses import dataclass

import pytest
from helpers import PYTHON, assert_one_line_error, python_env

from ignite_lenet import cmdline
from ignite_lenet.cmdline import EXTRA_MODULES, Interval, option


@dataclass
class Example:
    """Settings of a made-up command: the toolkit knows nothing of training or serving."""

    batch_size: int = option(32, "images per batch", range=(1, 4096), section="data")
    rate: float = option(0.1, "a rate", range=Interval(0, 1, "(]"))
    mode: str = option("fast", "how", choices=("fast", "slow"), section="behaviour")
    limit: int | None = option(None, "an optional limit", range=(0, 10))
    augment: bool | None = option(None, "augment (default: the recipe's)", flag="--augment/--no-augment")
    download: bool = option(True, "download", flag="--no-download")

    def __post_init__(self) -> None:
        cmdline.check_fields(self)


def parser() -> argparse.ArgumentParser:
    p = cmdline.ArgumentParser(prog="example")
    cmdline.add_arguments(p, Example)
    return p


def test_a_dataclass_becomes_flags_with_help_defaults_and_sections():
    text = parser().format_help()
    for line in ("--batch-size N", "images per batch (default: 32)", "--rate X", "--mode {fast,slow}",
                 "--augment, --no-augment", "--no-download", "data:", "behaviour:"):
        assert line in text, (line, text)
    body = text.split("\n\n", 1)[1]  # past the usage line
    assert body.index("data:") < body.index("--batch-size") < body.index("behaviour:") < body.index("--mode")
    args = parser().parse_args(["--batch-size", "64", "--no-augment", "--no-download", "--limit", "3"])
    settings = cmdline.from_args(args, Example)
    assert settings == Example(batch_size=64, augment=False, download=False, limit=3)
    assert cmdline.explicit_options(parser(), ["--batch-size", "64"]) == {"batch_size": 64}


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "--batch-size: must be an integer from 1 to 4,096, got 0"),
    (["--batch-size", "1e20"], "--batch-size: expected an integer from 1 to 4,096, got '1e20'"),
    (["--batch-size", "9" * 40], "--batch-size: must be an integer from 1 to 4,096, got 999999999999999999999..."),
    (["--mode", "medium"], "--mode: invalid choice: 'medium'"),
])
def test_a_bad_flag_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(argv)
    assert exit_info.value.code == cmdline.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("example: error: ") and message in err[-1], err


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 5000}, "--batch-size must be a positive integer (at most 4,096), got 5000"),
    ({"batch_size": True}, "--batch-size must be an integer, got True"),
    ({"rate": 0.0}, "--rate must be a number in (0, 1], got 0.0"),
    ({"rate": math.nan}, "--rate must be a finite number, got nan"),
    ({"rate": 10**400}, "--rate must be a finite number"),
    ({"mode": "medium"}, "--mode must be one of fast, slow, got 'medium'"),
    ({"limit": 11}, "--limit must be an integer from 0 to 10, got 11"),
    ({"augment": "yes"}, "--augment must be true, false or null, got 'yes'"),
    ({"download": None}, "download must be true or false, got None"),  # its only flag negates it
])
def test_the_instance_checks_itself_against_its_annotations_and_ranges(change, message):
    with pytest.raises(ValueError) as error:
        Example(**change)
    assert message in str(error.value)


def test_argparse_types_and_interval_edges():
    assert cmdline.int_range(0, 10)(" 1_0 ") == 10
    assert cmdline.float_range(0, 1)("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match="must be a number from 0 to 1, got nan"):
        cmdline.float_range(0, 1)("nan")
    assert 1 in Interval(0, 1, "(]") and 0 not in Interval(0, 1, "(]") and math.nan not in Interval(0, 1)
    assert str(Interval(0, 1, "[)")) == "[0, 1)"
    assert cmdline.flag_name("max_request_pixels") == "--max-request-pixels"
    assert cmdline.base_type(int | None) == (int, True) and cmdline.base_type(str) == (str, False)


def test_the_toolkit_imports_neither_training_nor_serving():
    code = ("import sys, ignite_lenet.cmdline\n"
            "print(sorted(m for m in sys.modules if m.startswith(('ignite_lenet.training', 'ignite_lenet.serving', "
            "'ignite_lenet.config', 'torch'))))")
    result = subprocess.run([sys.executable, "-c", code], env=python_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", (result.stdout, result.stderr)

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
