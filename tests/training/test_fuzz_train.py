"""Hostile inputs for the training side: ``python -m ignite_lenet.train``, ``python -m ignite_lenet.seeds``, and the
Python API (``TrainConfig``, ``train``, ``load_model``, ``TrainConfig.from_file``).

The promise under test: exit 2 with exactly one line on stderr that names the flag or the file, never a traceback,
and nothing half-written (no checkpoint, no run directory, an existing run directory unchanged). Each table row is
one hostile input, run in-process through the command lines' ``main`` so the module stays fast; a few run as real
subprocesses to show that no traceback reaches a user. Inputs that would pass validation point ``--data-dir`` at an
empty directory with ``--no-download``, so a wrongly accepted one fails on the data instead of training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error as _assert_one_line_error
from helpers import call_main as _call
from helpers import run_module, truncated_mnist_copy

from ignite_lenet.checkpoints import load_model
from ignite_lenet.config import MAX_COUNT, MAX_SEED, TrainConfig
from ignite_lenet.files import read_json
from ignite_lenet.mnist.idx import raw_dir
from ignite_lenet.model import LeNet5
from ignite_lenet.seeds import main as seeds_main
from ignite_lenet.spec import CONFIG, HISTORY, TRAINING_CHECKPOINT
from ignite_lenet.train import main as train_main
from ignite_lenet.training.job import train

HUGE = "100000000000000000000000"  # 10**23


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """A case that passes ``--threads`` must not leave this process's thread count changed."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a digest of its bytes (empty when ``root`` does not exist)."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def empty_data(tmp_path) -> Path:
    path = tmp_path / "no-mnist"
    path.mkdir()
    return path


def _train_fails(args: list[str], capsys, out: Path, *expected: str, main=train_main, allowed: tuple[str, ...] = ()):
    """Run ``main(args)``; one-line exit 2 naming ``expected``, and ``out`` unchanged apart from ``allowed`` files."""
    before = _tree(out)
    code, _, err = _call(main, args, capsys)
    _assert_one_line_error(code, err, *expected)
    after = {k: v for k, v in _tree(out).items() if k not in allowed}
    assert after == {k: v for k, v in before.items() if k not in allowed}, f"{out} changed: {sorted(after)}"
    assert not list(out.rglob("*.pt")) or before, f"a checkpoint was written in {out}"
    return err


# --- numeric flags ---------------------------------------------------------------------------------------------

BAD_INTEGERS = ["-1", HUGE, "-" + HUGE, "1e20", "nan", "inf", "abc", "1.5", "", "0x10", "1 2"]
INT_FLAGS = {  # flag -> extra values that are bad for it (zero, just past its upper bound)
    "--epochs": ["0", str(MAX_COUNT + 1)],
    "--batch-size": ["0", "60001", str(MAX_COUNT + 1)],
    "--eval-batch-size": ["0", "60001", str(MAX_COUNT + 1)],
    "--t-max": ["0", str(MAX_COUNT + 1)],
    "--seed": [str(MAX_SEED + 1), str(2**64)],
    "--threads": ["0", "4097", str(MAX_COUNT + 1)],
    "--epoch-length": ["0", str(MAX_COUNT + 1)],
    "--patience": ["0", str(MAX_COUNT + 1)],
    "--val-size": ["0", "60000"],
    "--train-eval-size": ["60001"],
    "--nproc-per-node": ["0", "1025", str(MAX_COUNT)],
}
BAD_FLOATS = ["nan", "inf", "-inf", "-1", "abc", "", "1e400", "-1e400", "1,5", "0x1p-3x"]
FLOAT_FLAGS = {
    "--lr": ["0", "-0", "1e-400"],
    "--weight-decay": ["1", "1e300"],
    "--eta-min": ["1"],  # above --lr
    "--pct-start": ["0", "1"],
    "--label-smoothing": ["1"],
    "--ema-decay": ["1"],
}
NUMERIC_CASES = [(flag, value) for flag, extra in INT_FLAGS.items() for value in BAD_INTEGERS + extra] + [
    (flag, value) for flag, extra in FLOAT_FLAGS.items() for value in BAD_FLOATS + extra]


@pytest.mark.parametrize("flag, value", NUMERIC_CASES)
def test_bad_numbers_name_their_flag(flag, value, tmp_path, empty_data, capsys):
    context = ["--backend", "gloo"] if flag == "--nproc-per-node" else []  # else "needs --backend" answers first
    args = [*context, "--data-dir", str(empty_data), "--no-download", "--output-dir", str(tmp_path / "out"),
            f"{flag}={value}"]
    _train_fails(args, capsys, tmp_path / "out", flag)


# --- choices, combinations, paths ------------------------------------------------------------------------------

OTHER_CASES = [  # (args, what the line must name)
    (["--device", "tpu"], "--device"),
    (["--device", ""], "--device"),
    (["--recipe", "x"], "--recipe"),
    (["--recipe", "NOTEBOOK"], "--recipe"),
    (["--val-source", "train"], "--val-source"),
    (["--optimizer", "sgd"], "--optimizer"),
    (["--schedule", "step"], "--schedule"),
    (["--backend", "mpi"], "--backend"),
    (["--backend", "nccl", "--device", "cpu"], "--backend nccl"),
    (["--nproc-per-node", "2"], "--nproc-per-node"),
    (["--elastic"], "--elastic"),
    (["--elastic", "--no-augment"], "--elastic"),
    (["--init-from", "{tmp}", "--resume"], "--init-from"),
    (["--init-from", ""], "--init-from"),
    (["--augment=yes"], "--augment"),
    (["--resume=1"], "--resume"),
    (["--overwrite", "--resume"], "--overwrite"),
    (["--overwrite=yes"], "--overwrite"),
    (["--epochs"], "--epochs"),
    (["--bogus"], "--bogus"),
    (["--output-dir", ""], "--output-dir"),
    (["--data-dir", ""], "--data-dir"),
    (["--output-dir", "{file}"], "--output-dir"),
    (["--output-dir", "{file}/run"], "--output-dir"),
    (["--output-dir", "{file}/a/b"], "--output-dir"),
]


def _case_id(value):
    return " ".join(value) if isinstance(value, list) else value


def _fails_with_placeholders(main, args, expected, out_name, tmp_path, empty_data, capsys):
    """``args`` with ``{tmp}`` and ``{file}`` (a plain file) filled in fail in one line; the file is untouched."""
    (tmp_path / "file").write_text("not a directory")
    args = [a.format(tmp=tmp_path, file=tmp_path / "file") for a in args]
    base = ["--data-dir", str(empty_data), "--no-download"]
    if "--output-dir" not in args:
        base += ["--output-dir", str(tmp_path / out_name)]
    _train_fails([*base, *args], capsys, tmp_path / out_name, expected, main=main)
    assert (tmp_path / "file").read_text() == "not a directory"


@pytest.mark.parametrize("args, expected", OTHER_CASES, ids=_case_id)
def test_bad_choices_combinations_and_paths(args, expected, tmp_path, empty_data, capsys):
    _fails_with_placeholders(train_main, args, expected, "out", tmp_path, empty_data, capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="--device cuda is valid on this machine")
def test_device_cuda_without_a_gpu(tmp_path, empty_data, capsys):
    _train_fails(["--device", "cuda", "--data-dir", str(empty_data), "--output-dir", str(tmp_path / "out")], capsys,
                 tmp_path / "out", "--device cuda")


# --- data directories ------------------------------------------------------------------------------------------


def _linked_mnist(mnist_dir: Path, dest: Path, replace: dict[str, bytes | None]) -> Path:
    """``dest`` with MNIST/raw linking to the real files, except ``replace`` (name -> bytes, None: a directory)."""
    raw = raw_dir(dest)
    raw.mkdir(parents=True)
    replaced = {name.removesuffix(".gz") for name in replace}
    for path in raw_dir(mnist_dir).iterdir():
        if path.name.removesuffix(".gz") in replaced:
            continue
        (raw / path.name).symlink_to(path.resolve())
    for name, data in replace.items():
        if data is None:
            (raw / name).mkdir()
        else:
            (raw / name).write_bytes(data)
    return dest


DATA_CASES = {  # name -> (makes the --data-dir, what the line must name)
    "a file": (lambda m, d: (d.write_text("x"), d)[1], "not found"),
    "empty": (lambda m, d: (d.mkdir(), d)[1], "not found"),
    "MNIST/raw is a file": (lambda m, d: ((d / "MNIST").mkdir(parents=True), (d / "MNIST/raw").write_text("x"), d)[2],
                            "not found"),
    "truncated test labels": (lambda m, d: truncated_mnist_copy(m, d), "t10k-labels-idx1-ubyte"),
    "garbage train images": (lambda m, d: _linked_mnist(m, d, {"train-images-idx3-ubyte": b"hello world" * 100}),
                             "train-images-idx3-ubyte"),
    "empty train labels": (lambda m, d: _linked_mnist(m, d, {"train-labels-idx1-ubyte": b""}),
                           "train-labels-idx1-ubyte"),
    "not gzip": (lambda m, d: _linked_mnist(m, d, {"train-labels-idx1-ubyte.gz": b"\x1f\x8bnot gzip"}),
                 "train-labels-idx1-ubyte"),
    "a directory for a file": (lambda m, d: _linked_mnist(m, d, {"train-images-idx3-ubyte": None}),
                               "train-images-idx3-ubyte"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_directories(case, mnist_dir, tmp_path, capsys):
    make, expected = DATA_CASES[case]
    data = make(mnist_dir, tmp_path / "data")
    _train_fails(["--data-dir", str(data), "--no-download", "--output-dir", str(tmp_path / "out"), "--epochs", "1",
                  "--epoch-length", "1"], capsys, tmp_path / "out", expected)


def test_a_data_dir_that_is_a_file_fails_the_download_cleanly(tmp_path, capsys):
    (tmp_path / "data").write_text("x")
    _train_fails(["--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out")], capsys,
                 tmp_path / "out", str(tmp_path / "data"))
    assert (tmp_path / "data").read_text() == "x"


def test_a_huge_learning_rate_diverges_in_one_line(mnist_dir, tmp_path, capsys):
    """Accepted (it is a positive number) but training cannot follow it: one line saying what to do, no checkpoint."""
    _train_fails(["--data-dir", str(mnist_dir), "--no-download", "--output-dir", str(tmp_path / "out"), "--lr", "1e300",
                  "--epochs", "1", "--epoch-length", "3", "--no-progress", "--val-size", "100",
                  "--train-eval-size", "100"],
                 capsys, tmp_path / "out", "lower --lr", allowed=(CONFIG,))


def test_a_one_step_one_cycle_warm_up_is_one_line(mnist_dir, tmp_path, capsys):
    """--pct-start 0.2 of 5 steps: torch's OneCycleLR would divide by zero; the error says what to change."""
    _train_fails(["--data-dir", str(mnist_dir), "--no-download", "--output-dir", str(tmp_path / "out"),
                  "--recipe", "fast", "--epochs", "1", "--epoch-length", "5", "--no-progress"],
                 capsys, tmp_path / "out", "--pct-start 0.2 of 5 training steps", "--epoch-length",
                 allowed=(CONFIG,))
    code, _, err = _call(train_main, ["--data-dir", str(mnist_dir), "--no-download", "--output-dir",
                                      str(tmp_path / "ok"), "--recipe", "fast", "--epochs", "1", "--epoch-length",
                                      "6", "--no-progress", "--val-size", "100", "--train-eval-size", "100"], capsys)
    assert code == 0, err  # 1.2 warm-up steps are fine


def test_a_checkpoint_from_before_fast_tanh_resumes_only_without_it(mnist_dir, tmp_path, capsys):
    """An older release's training checkpoint has no 'fast_tanh': it trained with torch.tanh, and says so."""
    out = tmp_path / "out"
    common = ["--data-dir", str(mnist_dir), "--no-download", "--output-dir", str(out), "--epoch-length", "2",
              "--no-progress", "--val-size", "100", "--train-eval-size", "100"]
    code, _, err = _call(train_main, common + ["--epochs", "1"], capsys)
    assert code == 0, err
    path = out / TRAINING_CHECKPOINT
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["config"]["fast_tanh"]
    torch.save(checkpoint, path)
    _train_fails(common + ["--epochs", "2", "--resume", "--fast-tanh"], capsys, out, "--fast-tanh False, not True")
    code, _, err = _call(train_main, common + ["--epochs", "2", "--resume"], capsys)
    assert code == 0, err
    assert len(read_json(out / HISTORY)["lr"]) == 2


def test_the_largest_seed_trains(mnist_dir, tmp_path, capsys):
    """Every seed the validation accepts works, also where the augmentation derives its own seed from it."""
    code, _, err = _call(train_main, ["--data-dir", str(mnist_dir), "--no-download", "--output-dir", str(tmp_path),
                                  "--seed", str(MAX_SEED), "--augment", "--elastic", "--epochs", "1",
                                  "--epoch-length", "2", "--no-progress", "--val-size", "100",
                                  "--train-eval-size", "100"], capsys)
    assert code == 0, err
    assert read_json(tmp_path / CONFIG)["seed"] == MAX_SEED


# --- --config FILE ---------------------------------------------------------------------------------------------

CONFIG_CASES = {  # name -> (file content: bytes, or a dict merged into a safe base; what the line must name)
    "empty": (b"", None),
    "not JSON": (b"{epochs: 3", None),
    "a JSON list": (b"[1, 2]", None),
    "a JSON string": (b'"epochs"', None),
    "JSON null": (b"null", None),
    "binary": (b"\xff\xfe\x00garbage", None),
    "a 5000-digit number": (b'{"seed": ' + b"9" * 5000 + b"}", None),
    "unknown key": ({"epoch": 3}, "'epoch'"),
    "nested config key": ({"config": "other.json"}, "'config'"),
    "epochs a string": ({"epochs": "3"}, "--epochs"),
    "epochs a float": ({"epochs": 3.5}, "--epochs"),
    "epochs true": ({"epochs": True}, "--epochs"),
    "lr a string": ({"lr": "1e-3"}, "--lr"),
    "augment a string": ({"augment": "yes"}, "--augment"),
    "recipe a list": ({"recipe": ["fast"]}, "--recipe"),
    "recipe an object": ({"recipe": {}}, "--recipe"),
    "recipe unknown": ({"recipe": "fastest"}, "--recipe"),
    "device a number": ({"device": 5}, "--device"),
    "seed a float": ({"seed": 1.5}, "--seed"),
    "threads a string": ({"threads": "4"}, "--threads"),
    "val_size a list": ({"val_size": []}, "--val-size"),
    "data_dir a number": ({"data_dir": 5}, "--data-dir"),
    "output_dir a list": ({"output_dir": []}, "--output-dir"),
    "init_from a number": ({"init_from": 5}, "--init-from"),
    "cuda_graphs a string": ({"cuda_graphs": "auto"}, "--cuda-graphs"),
    "null seed": ({"seed": None}, "--seed"),
    "null recipe": ({"recipe": None}, "--recipe"),
    "null data_dir": ({"data_dir": None}, "--data-dir"),
    "null output_dir": ({"output_dir": None}, "--output-dir"),
    "null download": ({"download": None}, "download"),
    "null val_size": ({"val_size": None}, "--val-size"),
    "null eval_batch_size": ({"eval_batch_size": None}, "--eval-batch-size"),
    "null val_source": ({"val_source": None}, "--val-source"),
    "null device": ({"device": None}, "--device"),
    "null progress": ({"progress": None}, "progress"),
    "huge epochs": ({"epochs": 10**30}, "--epochs"),
    "huge integer lr": ({"lr": 10**400}, "--lr"),
    "huge integer weight_decay": ({"weight_decay": 10**400}, "--weight-decay"),
    "huge seed": ({"seed": 10**30}, "--seed"),
    "negative seed": ({"seed": -1}, "--seed"),
    "huge threads": ({"threads": 10**20}, "--threads"),
    "lr overflowing to inf": (b'{"lr": 1e400}', "--lr"),
    "lr NaN": (b'{"lr": NaN}', "--lr"),
    "pct_start NaN": (b'{"pct_start": NaN}', "--pct-start"),
    "label_smoothing Infinity": (b'{"label_smoothing": Infinity}', "--label-smoothing"),
    "huge nproc_per_node": ({"backend": "gloo", "nproc_per_node": 10**9}, "--nproc-per-node"),
    "elastic without augment": ({"elastic": True, "augment": False}, "--elastic"),
    "init_from with resume": ({"init_from": "x", "resume": True}, "--init-from"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_files(case, tmp_path, empty_data, capsys):
    content, expected = CONFIG_CASES[case]
    out = tmp_path / "out"
    path = tmp_path / "config.json"
    if isinstance(content, dict):
        base = {"data_dir": str(empty_data), "download": False, "output_dir": str(out), "epochs": 1}
        content = json.dumps({**base, **content}).encode()
    path.write_bytes(content)
    # raw bytes name neither data nor output directory: the defaults would be used, so give them as flags
    flags = [] if isinstance(CONFIG_CASES[case][0], dict) else ["--data-dir", str(empty_data), "--no-download",
                                                                "--output-dir", str(out)]
    _train_fails(["--config", str(path), *flags], capsys, out, str(path), *([expected] if expected else []))


@pytest.mark.parametrize("make, expected", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "directory"),
])
def test_missing_or_directory_config(make, expected, tmp_path, empty_data, capsys):
    make(tmp_path / "config.json")
    _train_fails(["--config", str(tmp_path / "config.json"), "--data-dir", str(empty_data), "--output-dir",
                  str(tmp_path / "out")], capsys, tmp_path / "out", str(tmp_path / "config.json"), expected)


def test_a_bad_flag_over_a_good_config_names_the_flag(tmp_path, empty_data, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"data_dir": str(empty_data), "download": False, "output_dir": str(tmp_path / "out")}))
    err = _train_fails(["--config", str(path), "--epochs", "0"], capsys, tmp_path / "out", "--epochs")
    assert str(path) not in err  # the file is fine: the flag is at fault


def test_an_unknown_key_suggests_the_setting(tmp_path, empty_data, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"data_dir": str(empty_data), "epoch": 3}))
    _train_fails(["--config", str(path), "--output-dir", str(tmp_path / "out")], capsys, tmp_path / "out",
                 "'epoch'", "'epochs'")


# --- --init-from and --resume ----------------------------------------------------------------------------------


def _best_model(model_entry=None, **changes) -> dict:
    state = LeNet5().state_dict() if model_entry is None else model_entry
    return {"model": state, "config": TrainConfig().to_dict(), "epoch": 1, "val_loss": 0.1, "val_accuracy": 0.9,
            **changes}


def _onnx_bytes() -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph).SerializeToString()


def _save(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _zip_bytes() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/readme.txt", "not an exported program")
    return buffer.getvalue()


def _wrong_shapes() -> dict:
    state = LeNet5().state_dict()
    name = next(iter(state))
    state[name] = torch.zeros(3, 3)
    return state


def _nan_weights() -> dict:
    state = LeNet5().state_dict()
    return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}


MODEL_FILES = {  # name -> (file name, bytes; None: a directory without best_model.pt)
    "missing": ("missing.pt", ...),
    "a directory without best_model.pt": ("run", None),
    "empty file": ("best_model.pt", b""),
    "text file": ("best_model.pt", b"weights go here\n"),
    "random bytes": ("best_model.pt", os.urandom(2048)),
    "truncated checkpoint": ("best_model.pt", _save(_best_model())[:3000]),
    "an ONNX model": ("lenet5.onnx", _onnx_bytes()),
    "a list": ("best_model.pt", _save([1, 2, 3])),
    "model is a tensor": ("best_model.pt", _save(_best_model(torch.zeros(10)))),
    "model is a string": ("best_model.pt", _save(_best_model("weights"))),
    "model has wrong shapes": ("best_model.pt", _save(_best_model(_wrong_shapes()))),
    "model misses weights": ("best_model.pt", _save(_best_model({"conv1.weight": torch.zeros(6, 1, 5, 5)}))),
    "model has NaN weights": ("best_model.pt", _save(_best_model(_nan_weights()))),
    "training checkpoint with a tensor model": ("training_checkpoint.pt", _save({"model": torch.zeros(3)})),
    "a pickled Namespace": ("best_model.pt", _save(argparse.Namespace(lr=1))),
    "a corrupt .pt2": ("lenet5.pt2", b"PK\x03\x04 not really a zip"),
    "a zip that is no .pt2": ("lenet5.pt2", _zip_bytes()),
    "a corrupt torchscript": ("lenet5.torchscript.pt", b"PK\x03\x04 nor this"),
}


def _model_file(tmp_path: Path, case: str) -> Path:
    name, data = MODEL_FILES[case]
    path = tmp_path / "given" / name
    path.parent.mkdir(exist_ok=True)
    if data is None:
        path.mkdir()
    elif data is not ...:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(MODEL_FILES))
def test_bad_init_from(case, tmp_path, mnist_dir, capsys):
    path = _model_file(tmp_path, case)
    _train_fails(["--init-from", str(path), "--data-dir", str(mnist_dir), "--no-download", "--output-dir",
                  str(tmp_path / "out"), "--epochs", "1", "--epoch-length", "1", "--no-progress"],
                 capsys, tmp_path / "out", "--init-from", str(path))


@pytest.mark.parametrize("case", list(MODEL_FILES))
def test_load_model_refuses_bad_files_naming_them(case, tmp_path):
    path = _model_file(tmp_path, case)
    with pytest.raises((FileNotFoundError, ValueError)) as raised:
        load_model(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def _training_checkpoint(**changes) -> dict:
    """The keys of a real ``training_checkpoint.pt``, with empty states."""
    return {"config": TrainConfig().to_dict(), "model": LeNet5().state_dict(), "trainer": {}, "optimizer": {},
            "lr_scheduler": {}, "best_checkpoint": {}, "history": {}, **changes}


RESUME_FILES = {  # name -> training_checkpoint.pt content (None: a directory of that name)
    "empty": b"",
    "random bytes": os.urandom(4096),
    "truncated": _save({"model": LeNet5().state_dict()})[:2000],
    "a list": _save([1, 2]),
    "an empty dict": _save({}),
    "config is a string": _save({"config": "lr=1"}),
    "config is a list": _save({"config": [1]}),
    "a best_model.pt": _save(_best_model()),
    "trained with another lr": _save(_training_checkpoint(config={**TrainConfig().to_dict(), "lr": 0.5})),
    "model has wrong shapes": _save(_training_checkpoint(model=_wrong_shapes())),
    "trainer state is a string": _save(_training_checkpoint(trainer="epoch 3")),
    "a directory": None,
}


@pytest.mark.parametrize("case", list(RESUME_FILES))
def test_bad_resume_checkpoints_leave_the_run_untouched(case, tmp_path, mnist_dir, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / CONFIG).write_text('{"an": "earlier run"}\n')
    checkpoint = out / TRAINING_CHECKPOINT
    if RESUME_FILES[case] is None:
        checkpoint.mkdir()
    else:
        checkpoint.write_bytes(RESUME_FILES[case])
    expected = ["--resume", "--lr"] if case == "trained with another lr" else ["--resume"]
    _train_fails(["--resume", "--data-dir", str(mnist_dir), "--no-download", "--output-dir", str(out),
                  "--no-progress"], capsys, out, *expected, *([] if case == "a directory" else [str(checkpoint)]))


# --- python -m ignite_lenet.seeds ------------------------------------------------------------------------------

SEEDS_CASES = [  # (args, what the line must name)
    (["--seeds", "1", "1"], "--seeds"),
    (["--seeds", "0", "-1"], "--seeds"),
    (["--seeds", HUGE], "--seeds"),
    (["--seeds", str(MAX_SEED + 1)], "--seeds"),
    (["--seeds", "1e3"], "--seeds"),
    (["--seeds", "abc"], "--seeds"),
    (["--seeds"], "--seeds"),
    (["--seed", "5"], "--seed"),  # one seed per run comes from --seeds: a lone --seed would be ignored
    (["--output-dir", "{file}"], "--output-dir"),
    (["--output-dir", "{file}/sweep"], "--output-dir"),
    (["--epochs", "0"], "--epochs"),
    (["--threads", "1e20"], "--threads"),
    (["--elastic"], "--elastic"),
    (["--config", "{tmp}/missing.json"], "--config"),
    (["--overwrite", "--resume"], "--overwrite"),
]


@pytest.mark.parametrize("args, expected", SEEDS_CASES, ids=_case_id)
def test_bad_seeds_sweeps(args, expected, tmp_path, empty_data, capsys):
    _fails_with_placeholders(seeds_main, args, expected, "sweep", tmp_path, empty_data, capsys)


# --- the Python API --------------------------------------------------------------------------------------------

API_CONFIGS = [  # TrainConfig keywords -> the flag its ValueError names
    ({"epochs": True}, "--epochs"),
    ({"epochs": 0}, "--epochs"),
    ({"epochs": 2.0}, "--epochs"),
    ({"lr": "1e-3"}, "--lr"),
    ({"lr": float("nan")}, "--lr"),
    ({"lr": 10**400}, "--lr"),
    ({"weight_decay": 10**400}, "--weight-decay"),
    ({"seed": -1}, "--seed"),
    ({"seed": 2**63}, "--seed"),
    ({"seed": None}, "--seed"),
    ({"recipe": "x"}, "--recipe"),
    ({"recipe": ["fast"]}, "--recipe"),
    ({"threads": 10**20}, "--threads"),
    ({"threads": True}, "--threads"),
    ({"patience": 1.5}, "--patience"),
    ({"backend": "gloo", "nproc_per_node": 10**6}, "--nproc-per-node"),
    ({"device": ["cpu"]}, "--device"),
    ({"data_dir": Path("data")}, "--data-dir"),
    ({"init_from": 5}, "--init-from"),
    ({"overwrite": "yes"}, "--overwrite"),
    ({"overwrite": True, "resume": True}, "--overwrite"),
]


@pytest.mark.parametrize("kwargs, flag", API_CONFIGS, ids=lambda v: repr(v)[:40])
def test_train_config_rejects_by_name(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        TrainConfig(**kwargs)


def test_train_typos_and_unknown_fields_are_type_errors():
    with pytest.raises(TypeError, match="epoch"):
        train(epoch=3)
    with pytest.raises(TypeError, match="epoch"):
        train(TrainConfig(), epoch=3)
    with pytest.raises(TypeError, match="bogus"):
        TrainConfig(bogus=1)


def test_train_refuses_an_output_dir_under_a_file_before_loading_data(tmp_path, empty_data):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "run"):
        with pytest.raises(ValueError, match="--output-dir"):
            train(data_dir=str(empty_data), download=False, output_dir=str(out), progress=False)
    assert (tmp_path / "file").read_text() == "x"


def test_from_file_names_the_file(tmp_path):
    path = tmp_path / "c.json"
    with pytest.raises(FileNotFoundError, match="c.json"):
        TrainConfig.from_file(path)
    path.write_text('{"epoch": 3}')
    with pytest.raises(ValueError, match="c.json.*'epoch'"):
        TrainConfig.from_file(path)
    path.write_text('{"epochs": "3"}')
    with pytest.raises(ValueError, match="c.json.*--epochs"):
        TrainConfig.from_file(path)
    path.write_text('{"epochs": 3}')
    with pytest.raises(ValueError, match="--lr"):  # the override is at fault, not the file
        TrainConfig.from_file(path, lr=-1)
    assert TrainConfig.from_file(path, lr=0.01).lr == 0.01


# --- as a user sees it: real subprocesses ----------------------------------------------------------------------


def test_no_traceback_reaches_a_user(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad.json").write_text('{"epoch": 3}')
    (tmp_path / "corrupt.pt").write_bytes(b"\x80\x02garbage")
    runs = [  # a parse-time error, a config file's, one found while loading weights, one from the seeds sweep
        (("ignite_lenet.train", "--threads", "1e20"), "--threads"),
        (("ignite_lenet.train", "--config", str(tmp_path / "bad.json"), "--output-dir", str(tmp_path / "out")),
         "'epoch'"),
        (("ignite_lenet.train", "--init-from", str(tmp_path / "corrupt.pt"), "--data-dir", str(tmp_path),
          "--no-download", "--output-dir", str(tmp_path / "out")), "--init-from"),
        (("ignite_lenet.seeds", "--seeds", "0", HUGE, "--output-dir", str(tmp_path / "file"), "--data-dir",
          str(tmp_path), "--no-download"), "--seeds"),
    ]
    with ThreadPoolExecutor(len(runs)) as pool:
        done = list(pool.map(lambda r: run_module(*r[0]), runs))
    for (args, expected), result in zip(runs, done):
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
    assert not (tmp_path / "out").exists() and (tmp_path / "file").read_text() == "x"
