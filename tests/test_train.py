"""``python -m ignite_lenet.train`` as a user runs it: help, a tiny real run, and one-line errors (exit 2)."""


import pytest
from helpers import run_module, truncated_mnist_copy

from ignite_lenet.files import read_json
from ignite_lenet.spec import METRICS
from ignite_lenet.train import main


def _run(*args):
    return run_module("ignite_lenet.train", *args)


def test_help_explains_every_flag():
    done = _run("--help")
    assert done.returncode == 0
    for flag in ("--data-dir", "--no-download", "--output-dir", "--epochs", "--batch-size", "--lr", "--t-max",
                 "--eta-min", "--seed", "--device", "--val-source", "--sanity-check", "--epoch-length", "--resume",
                 "--overwrite", "--patience", "--no-progress"):
        assert flag in done.stdout


def test_a_tiny_real_run_end_to_end(mnist_dir, tmp_path):
    done = _run("--data-dir", str(mnist_dir), "--no-download", "--epochs", "2", "--epoch-length", "20",
                "--output-dir", str(tmp_path), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "epoch   2/2" in done.stdout and "test accuracy" in done.stdout and "Total params: 61,706" in done.stdout
    assert "Traceback" not in done.stderr
    metrics = read_json(tmp_path / METRICS)
    assert metrics["epochs_run"] == 2 and 0.0 <= metrics["test_accuracy"] <= 1.0


def test_bad_input_in_a_subprocess_is_one_line_without_traceback(tmp_path):
    done = _run("--data-dir", str(tmp_path), "--no-download")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "not found" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--batch-size", "abc"], "invalid int value"),
        (["--bogus"], "unrecognized arguments"),
        (["--val-source", "train"], "invalid choice"),
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--nproc-per-node", "2"], "--nproc-per-node needs --backend"),
        (["--resume", "--output-dir", "{tmp}/nothing-here"], "no training_checkpoint.pt"),
        (["--data-dir", "{tmp}", "--no-download"], "not found in"),
        (["--data-dir", "{corrupt}", "--no-download"], "truncated"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(args, expected, tmp_path, mnist_dir, capsys):
    corrupt = truncated_mnist_copy(mnist_dir, tmp_path / "corrupt") if "{corrupt}" in args else None
    args = [a.format(tmp=tmp_path, corrupt=corrupt) for a in args]
    if "--data-dir" not in args:
        args += ["--data-dir", str(mnist_dir), "--no-download"]
    try:
        code = main([*args, "--output-dir", str(tmp_path / "out")] if "--output-dir" not in args else args)
    except SystemExit as e:  # argparse errors exit from parse_args
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and err.count("\n") == 1, err
