from ignite_lenet.export.__main__ import main as export_main

"""Exports of a model trained on real MNIST: files, parity, self-containedness, metadata, failure hygiene."""

import json
import subprocess
import textwrap
import warnings

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch
from helpers import PYTHON, assert_one_line_error, call_main, python_env, remount, run_module, small_tmpfs

from ignite_lenet.export import verify as export_verify
from ignite_lenet.export.exporter import export
from ignite_lenet.spec import MAX_OPSET, MIN_OPSET
from ignite_lenet.export.formats import FORMATS, load_runner
from ignite_lenet.export.metadata import sha256_file
from ignite_lenet.export.verify import ExportMismatch
from ignite_lenet.mnist.idx import read_mnist
from ignite_lenet.mnist.resize import to_model_input
from ignite_lenet.spec import EXPORT_FILES


@pytest.fixture(scope="module")
def test_images(mnist_dir):
    images, labels = read_mnist(mnist_dir, "test", download=False)
    return to_model_input(images), labels


def test_every_format_is_written_verified_and_agrees(exported):
    out = exported.files["onnx"].parent
    assert {fmt: path.relative_to(out).as_posix() for fmt, path in exported.files.items()} == {
        f: EXPORT_FILES[f] for f in FORMATS}
    for fmt in FORMATS:
        assert exported.max_abs_diff[fmt] <= 1e-4
        assert exported.test_accuracy[fmt] == exported.test_accuracy["eager"]  # the same class on every image
        assert exported.sizes[fmt] > 200_000  # 61,706 float32 weights are inside
    assert exported.test_accuracy["eager"] > 0.9


@pytest.mark.parametrize("fmt", FORMATS)
def test_reloaded_exports_match_eager_at_batch_1_and_7(exported, trained_checkpoint, test_images, fmt):
    from ignite_lenet.checkpoints import load_best_model

    model, _ = load_best_model(trained_checkpoint)
    run = load_runner(fmt, exported.files[fmt])
    for batch in (test_images[0][:1], test_images[0][100:107]):
        with torch.inference_mode():
            expected = model(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(run(np.ascontiguousarray(batch)), expected, atol=1e-4, rtol=0)


def test_onnx_is_one_self_contained_file_with_named_dynamic_io(exported):
    path = exported.files["onnx"]
    top = sorted(EXPORT_FILES[f].split("/")[0] for f in FORMATS)  # the Triton repository is a directory
    assert sorted(p.name for p in path.parent.iterdir()) == top  # no .data beside it
    proto = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    onnx.checker.check_model(proto, full_check=True)
    (inp,), (out,) = proto.graph.input, proto.graph.output

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert inp.name == "input" and dims(inp) == ["batch", 1, 32, 32]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert out.name == "logits" and dims(out) == ["batch", 10]
    # conv1's 6 filters are padded with zero filters to 8 (ONNX Runtime's blocked layout); outputs unchanged
    shapes = {t.name: list(t.dims) for t in proto.graph.initializer}
    assert shapes["conv1.weight"] == [8, 1, 5, 5] and shapes["conv2.weight"] == [16, 8, 5, 5]
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert not weights["conv1.weight"][6:].any() and not weights["conv2.weight"][:, 6:].any()


def test_metadata_travels_in_every_format(exported, trained_checkpoint):
    sha = sha256_file(trained_checkpoint)
    onnx_meta = {p.key: p.value for p in onnx.load(str(exported.files["onnx"])).metadata_props}
    extra = {"metadata.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        torch.jit.load(str(exported.files["torchscript"]), _extra_files=extra)
    ts_meta = json.loads(extra["metadata.json"])
    pt2_extra = {"metadata.json": ""}
    torch.export.load(str(exported.files["torch-export"]), extra_files=pt2_extra)
    pt2_meta = json.loads(pt2_extra["metadata.json"])
    for meta in (onnx_meta, ts_meta, pt2_meta):
        assert meta["source_checkpoint_sha256"] == sha
        assert json.loads(meta["class_names"]) == [str(d) for d in range(10)]
        assert json.loads(meta["preprocessing"])["resize"] == [32, 32]
        assert float(meta["test_accuracy"]) == pytest.approx(exported.test_accuracy["eager"], abs=1e-6)
        for key in ("val_accuracy", "torch_version", "ignite_version", "onnx_version", "export_date"):
            assert meta[key], key


def test_exports_run_where_ignite_lenet_cannot_be_imported(exported, trained_checkpoint, test_images, tmp_path):
    from ignite_lenet.checkpoints import load_best_model

    images, _ = test_images
    model, _ = load_best_model(trained_checkpoint)
    with torch.inference_mode():
        eager = model(torch.from_numpy(images[:500])).argmax(1).tolist()
    np.save(tmp_path / "images.npy", images[:500])
    script = textwrap.dedent(f"""
        import sys
        sys.modules["ignite_lenet"] = None  # any import of the package now fails
        import json, numpy as np, onnxruntime, torch, warnings
        warnings.simplefilter("ignore")
        x = np.load(r"{tmp_path / 'images.npy'}")
        out = {{}}
        session = onnxruntime.InferenceSession(r"{exported.files['onnx']}", providers=["CPUExecutionProvider"])
        out["onnx"] = session.run(None, {{"input": x}})[0].argmax(1).tolist()
        session = onnxruntime.InferenceSession(r"{exported.files['triton']}", providers=["CPUExecutionProvider"])
        out["triton"] = session.run(None, {{"input": x}})[0].argmax(1).tolist()
        scripted = torch.jit.load(r"{exported.files['torchscript']}")
        out["torchscript"] = scripted(torch.from_numpy(x)).argmax(1).tolist()
        program = torch.export.load(r"{exported.files['torch-export']}").module()
        out["torch-export"] = program(torch.from_numpy(x)).argmax(1).tolist()
        try:
            import ignite_lenet
        except ImportError:
            out["ignite_lenet_importable"] = False
        print(json.dumps(out))
    """)
    done = subprocess.run([PYTHON, "-c", script], env=python_env(), capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.pop("ignite_lenet_importable") is False
    assert out == {fmt: eager for fmt in FORMATS}


def test_probabilities_output_appends_a_softmax(trained_checkpoint, mnist_dir, tmp_path, test_images, exported):
    report = export(trained_checkpoint, tmp_path, ("onnx",), output="probabilities", data_dir=mnist_dir,
                      download=False, log=lambda line: None)
    probs = load_runner("onnx", report.files["onnx"])(test_images[0][:7])
    logits = load_runner("onnx", exported.files["onnx"])(test_images[0][:7])
    np.testing.assert_allclose(probs.sum(1), np.ones(7), atol=1e-5)
    assert (probs.argmax(1) == logits.argmax(1)).all()
    assert onnx.load(str(report.files["onnx"])).graph.output[0].name == "probabilities"


def test_a_failed_verification_leaves_no_file(trained_checkpoint, mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(export_verify, "PARITY_ATOL", -1.0)  # no export can pass: exercise the failure path for real
    for fmt in FORMATS:
        with pytest.raises(ExportMismatch, match=fmt):
            export(trained_checkpoint, tmp_path, (fmt,), data_dir=mnist_dir, download=False, log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_int8_quantization_keeps_accuracy_within_0_3_points(trained_checkpoint, mnist_dir, tmp_path):
    report = export(trained_checkpoint, tmp_path, ("onnx",), quantize="int8", data_dir=mnist_dir, download=False,
                      log=lambda line: None)
    assert report.files["int8"].name == "lenet5.int8.onnx" and report.sizes["int8"] < report.sizes["onnx"] / 2
    assert report.test_accuracy["onnx"] - report.test_accuracy["int8"] <= 0.003
    assert any("latency" in note for note in report.notes)


def _run_export(*args):
    return run_module("ignite_lenet.export", *args)


def test_cli_exports_onnx(trained_checkpoint, mnist_dir, tmp_path):
    done = _run_export("--format", "onnx", "--checkpoint", str(trained_checkpoint), "--output-dir", str(tmp_path),
                       "--data-dir", str(mnist_dir), "--no-download")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "lenet5.onnx").is_file() and "test accuracy" in done.stdout


@pytest.mark.parametrize("make, expected", [
    (lambda d: d / "missing.pt", "no such checkpoint"),
    (lambda d: (d / "junk.pt").write_bytes(b"not a checkpoint") and d / "junk.pt", "not a readable PyTorch checkpoint"),
    (lambda d: torch.save({"weights": 1}, d / "other.pt") or d / "other.pt", "not a best-model checkpoint"),
])
def test_cli_bad_checkpoints_are_one_line_errors(make, expected, tmp_path, mnist_dir, capsys):
    code = export_main(["--checkpoint", str(make(tmp_path)), "--output-dir", str(tmp_path / "out"),
                   "--data-dir", str(mnist_dir), "--no-download"])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_full_or_read_only_export_directory_is_one_line_and_keeps_the_files_written(trained_checkpoint, mnist_dir,
                                                                                       tmp_path, capsys):
    args = ["--checkpoint", str(trained_checkpoint), "--data-dir", str(mnist_dir), "--no-download"]
    with small_tmpfs(tmp_path / "disk", "400k") as disk:  # lenet5.onnx fits, lenet5.torchscript.pt no longer
        code, _, err = call_main(export_main, [*args, "--format", "all", "--output-dir", str(disk)], capsys)
        assert_one_line_error(code, err, f"cannot write {disk / EXPORT_FILES['torchscript']}: No space left on device")
        assert sorted(p.name for p in disk.iterdir()) == [EXPORT_FILES["onnx"]]  # complete, no temporary file
        onnx.checker.check_model(onnx.load(str(disk / EXPORT_FILES["onnx"])), full_check=True)
        digest = sha256_file(disk / EXPORT_FILES["onnx"])
        remount(disk, "ro")
        code, _, err = call_main(export_main, [*args, "--format", "onnx", "--output-dir", str(disk)], capsys)
        assert_one_line_error(code, err, f"cannot write {disk / EXPORT_FILES['onnx']}: Read-only file system")
        assert sha256_file(disk / EXPORT_FILES["onnx"]) == digest


def test_raw_input_model_is_bit_identical_and_runs_from_plain_onnxruntime(raw_exported, mnist_dir, tmp_path):
    from ignite_lenet.mnist.resize import to_model_input

    report = raw_exported
    assert report.files["raw"].name == "lenet5.raw.onnx"
    assert report.test_accuracy["raw"] == report.test_accuracy["onnx"] > 0.85  # same class on all 10,000
    proto = onnx.load(str(report.files["raw"]))
    (inp,) = proto.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 28, 28]
    # the preprocessing inside the graph gives training's pixels exactly: expose the float model's input
    import onnxruntime

    raw, _ = read_mnist(mnist_dir, "test", download=False)
    proto.graph.output.append(onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.array_equal(session.run(["input"], {"image": raw})[0], to_model_input(raw))
    # the README's program: numpy + onnxruntime only, MNIST's test IDX file as it is
    from pathlib import Path

    program = Path(__file__).resolve().parents[2] / "examples" / "classify_idx.py"
    script = textwrap.dedent(f"""
        import runpy, sys
        for name in ("ignite_lenet", "torch", "torchvision"):
            sys.modules[name] = None  # importing any of them now fails
        sys.argv = ["classify_idx.py", r"{report.files['raw']}", r"{mnist_dir}/MNIST/raw/t10k-images-idx3-ubyte",
                    r"{mnist_dir}/MNIST/raw/t10k-labels-idx1-ubyte"]
        runpy.run_path(r"{program}", run_name="__main__")
    """)
    done = subprocess.run([PYTHON, "-c", script], env=python_env(), capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"10000 images, accuracy {100 * report.test_accuracy['raw']:.2f}%" in done.stdout


def _checkpoint_trained_elsewhere(trained_checkpoint, tmp_path, data_dir):
    """A copy of ``trained_checkpoint`` in a run directory, its recorded ``data_dir`` set to ``data_dir``."""
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    checkpoint["config"] = {**checkpoint["config"], "data_dir": str(data_dir)}
    run = tmp_path / "run"
    run.mkdir()
    torch.save(checkpoint, run / "best_model.pt")
    return run


def test_export_finds_mnist_where_the_checkpoint_was_trained(trained_checkpoint, mnist_dir, tmp_path, monkeypatch):
    run = _checkpoint_trained_elsewhere(trained_checkpoint, tmp_path, mnist_dir)
    monkeypatch.delenv("IGNITE_LENET_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    lines = []
    report = export(run, tmp_path / "out", ("onnx",), log=lines.append)  # a run directory, no --data-dir
    assert report.test_accuracy["onnx"] == report.test_accuracy["eager"] > 0.85
    assert not any("not checked" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]  # no ./data made


@pytest.mark.parametrize("opset", [MIN_OPSET, MAX_OPSET])
def test_without_mnist_exports_are_verified_on_synthetic_images_and_opsets_are_honoured(
        trained_checkpoint, tmp_path, monkeypatch, opset):
    run = _checkpoint_trained_elsewhere(trained_checkpoint, tmp_path, tmp_path / "gone")
    monkeypatch.delenv("IGNITE_LENET_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    lines = []
    report = export(run, tmp_path / "out", ("onnx",), opset=opset, raw_input=True, log=lines.append)
    notes = [line for line in lines if "not checked" in line]
    assert len(notes) == 1 and "synthetic" in notes[0] and "\n" not in notes[0]
    assert report.test_accuracy["onnx"] is None and report.max_abs_diff["onnx"] <= 1e-4
    for name in ("onnx", "raw"):
        proto = onnx.load(str(report.files[name]))
        assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    meta = {p.key: p.value for p in onnx.load(str(report.files["onnx"])).metadata_props}
    assert meta["test_accuracy"].startswith("not checked")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]  # nothing downloaded, no empty dirs
