"""``python -m ignite_lenet.predict`` on files written from real MNIST test images, IDX files and the test set."""

import gzip
import json
import os
import subprocess

import pytest
from helpers import PYTHON, python_env, run_module
from PIL import Image

from ignite_lenet.mnist.idx import raw_dir, read_mnist
from ignite_lenet.predict import main


@pytest.fixture(scope="module")
def digit_files(mnist_dir, tmp_path_factory):
    """12 real test digits as PNG/JPEG files: plain, RGB, resized, and dark-on-light; their true labels."""
    images, labels = read_mnist(mnist_dir, "test", download=False)
    folder = tmp_path_factory.mktemp("digits")
    truth = {}
    for i in range(12):
        array = images[i]
        if i % 3 == 0:
            path = folder / f"{i:02d}.png"
            Image.fromarray(array).save(path)
        elif i % 3 == 1:
            path = folder / f"{i:02d}.png"
            Image.fromarray(array).convert("RGB").resize((64, 64)).save(path)
        else:
            path = folder / f"{i:02d}.png"
            Image.fromarray(255 - array).save(path)  # dark digit on a light background
        truth[str(path)] = str(labels[i].item())
    return folder, truth


def _cli(*args):
    return run_module("ignite_lenet.predict", *args)


def test_images_get_their_labels(exported, digit_files):
    folder, truth = digit_files
    done = _cli("--model", str(exported.files["onnx"]), *sorted(truth))
    assert done.returncode == 0, done.stderr
    predicted = dict(line.split("\t")[:2] for line in done.stdout.splitlines())
    correct = sum(predicted[path] == label for path, label in truth.items())
    assert correct >= 10  # a briefly trained (~90%) model; the inverted ones are detected and inverted
    assert done.stderr.count("inverted it") == 4


def test_json_output_and_a_directory_argument(exported, digit_files, capsys):
    folder, truth = digit_files
    assert main(["--model", str(exported.files["onnx"]), "--json", str(folder)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in out["predictions"]] == sorted(truth) and out["errors"] == []
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-4 for p in out["predictions"])


def test_a_bad_file_among_good_ones_is_reported_and_the_rest_predicted(exported, digit_files, tmp_path, capsys):
    folder, truth = digit_files
    bad = tmp_path / "broken.png"
    bad.write_text("this is not an image")
    code = main(["--model", str(exported.files["onnx"]), str(bad), *sorted(truth)[:3]])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.png" in captured.err and len(captured.out.splitlines()) == 3


def test_the_test_set_and_an_idx_file_report_accuracy(exported, mnist_dir, tmp_path, capsys):
    assert main(["--model", str(exported.files["onnx"]), "--test-set", "--data-dir", str(mnist_dir),
                 "--no-download", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 10000 and summary["accuracy"] == pytest.approx(exported.test_accuracy["onnx"])
    assert summary["images_per_s"] > 0
    # the same images through --idx (gzipped, as downloads come), TorchScript this time
    raw = raw_dir(mnist_dir)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes(), compresslevel=1))
    assert main(["--model", str(exported.files["torchscript"]), "--idx", str(tmp_path / "t10k-images-idx3-ubyte.gz"),
                 "--labels", str(tmp_path / "t10k-labels-idx1-ubyte.gz")]) == 0
    out = capsys.readouterr().out
    assert f"accuracy {100 * exported.test_accuracy['onnx']:.2f}% on 10,000 images" in out


@pytest.mark.parametrize("args, expected", [
    (["--model", "{tmp}/missing.onnx", "x.png"], "no such model file"),
    (["--model", "{tmp}/fake.onnx", "x.png"], "not a loadable ONNX model"),
    (["--model", "{onnx}", "{tmp}/empty"], "no image files"),
    (["--model", "{onnx}"], "exactly one of them"),
    (["--model", "{onnx}", "--idx", "{tmp}/fake.onnx"], "not an IDX file"),
    (["--model", "{onnx}", "--test-set", "--labels", "x"], "--labels goes with --idx"),
])
def test_unusable_input_is_one_line_and_exit_2(args, expected, exported, tmp_path, capsys):
    (tmp_path / "fake.onnx").write_bytes(b"\x00\x01 definitely not protobuf")
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path, onnx=exported.files["onnx"]) for a in args]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1, err


def test_no_traceback_in_a_real_subprocess(tmp_path):
    done = _cli("--model", str(tmp_path / "none.onnx"), "x.png")
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def test_predict_runs_with_torch_and_torchvision_unimportable(exported, raw_exported, digit_files, mnist_dir):
    import subprocess

    from helpers import PYTHON, python_env

    folder, truth = digit_files
    raw = raw_dir(mnist_dir)
    for model, source in ((exported.files["onnx"], sorted(truth)),
                          (raw_exported.files["raw"], ["--idx", str(raw / "t10k-images-idx3-ubyte"),
                                                       "--labels", str(raw / "t10k-labels-idx1-ubyte")])):
        script = ("import sys\nsys.modules['torch'] = None\nsys.modules['torchvision'] = None\n"
                  "from ignite_lenet.predict import main\n"
                  f"sys.exit(main({['--model', str(model), *source]!r}))")
        done = subprocess.run([PYTHON, "-c", script], env=python_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        if "--idx" in source:
            assert f"accuracy {100 * raw_exported.test_accuracy['raw']:.2f}% on 10,000 images" in done.stdout
        else:
            predicted = dict(line.split("\t")[:2] for line in done.stdout.splitlines())
            assert sum(predicted[path] == label for path, label in truth.items()) >= 10


def test_output_formats_for_scripts(exported, digit_files, tmp_path, capsys):
    import csv
    import io
    import shutil

    folder, truth = digit_files
    odd = tmp_path / "a name, with spaces.png"
    first = sorted(truth)[0]
    shutil.copy(first, odd)
    model = ["--model", str(exported.files["onnx"])]
    assert main([*model, str(odd), "--top-k", "3"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    fields = line.split("\t")
    assert fields[0] == str(odd) and len(fields) == 7 and fields[1] == fields[1].strip()
    assert main([*model, str(odd), first, "--output-format", "csv", "--probabilities"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["path"] for r in rows] == [str(odd), first] and rows[0]["label"] == rows[1]["label"]
    assert abs(sum(float(rows[0][f"p{i}"]) for i in range(10)) - 1) < 1e-4
    assert main([*model, str(odd), "--output-format", "jsonl", "--top-k", "2"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["path"] == str(odd) and len(record["top_k"]) == 2 and record["top_k"][0][0] == record["label"]


def test_whole_set_probabilities_in_jsonl(exported, mnist_dir, capsys):
    assert main(["--model", str(exported.files["onnx"]), "--test-set", "--data-dir", str(mnist_dir),
                 "--no-download", "--output-format", "jsonl", "--probabilities"]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert len(records) == 10000 and records[0]["index"] == 0 and len(records[0]["probabilities"]) == 10
    accuracy = sum(r["label"] == r["true_label"] for r in records) / 10000
    assert accuracy == pytest.approx(exported.test_accuracy["onnx"])
    assert "accuracy" in captured.err  # the summary goes to stderr, out of the data stream


def test_a_blank_page_among_digits_is_no_digit_found_and_exit_1(exported, digit_files, tmp_path, capsys):
    folder, truth = digit_files
    Image.new("L", (200, 150), 255).save(tmp_path / "blank.png")
    code = main(["--model", str(exported.files["onnx"]), str(tmp_path / "blank.png"), *sorted(truth)[:2]])
    captured = capsys.readouterr()
    assert code == 1 and "blank.png: no digit found" in captured.err and len(captured.out.splitlines()) == 2


def test_standard_output_on_a_full_disk_is_one_line(exported, mnist_dir):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:  # every write fails with ENOSPC, as a redirect to a full disk does
        done = subprocess.run([PYTHON, "-m", "ignite_lenet.predict", "--model", str(exported.files["onnx"]),
                               "--test-set", "--data-dir", str(mnist_dir), "--no-download", "--output-format",
                               "jsonl"], stdout=full, stderr=subprocess.PIPE, text=True, env=python_env(), timeout=120)
    assert done.returncode == 2
    assert done.stderr == "python -m ignite_lenet.predict: error: cannot write standard output: No space left on device\n"
