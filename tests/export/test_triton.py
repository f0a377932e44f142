"""``--format triton``: a Triton model repository whose ``config.pbtxt`` parses with Triton's own schema
(``tritonclient.grpc.model_config_pb2.ModelConfig`` through protobuf's ``text_format``) and agrees with the ONNX
graph, verified like every export, and served by ``python -m ignite_lenet.serve --model DIR`` as it is."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import ServerProcess, run_module

from ignite_lenet.export.exporter import export
from ignite_lenet.export.verify import ExportMismatch
from ignite_lenet.mnist.idx import read_mnist
from ignite_lenet.mnist.resize import to_model_input

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
http = pytest.importorskip("tritonclient.http")
ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.UINT8: "TYPE_UINT8",
                  onnx.TensorProto.INT64: "TYPE_INT64"}


@pytest.fixture(scope="module")
def repository(trained_checkpoint, mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("model_repository")
    report = export(trained_checkpoint, out, ("triton",), data_dir=mnist_dir, download=False, log=lambda line: None)
    return out, report


def parse_config(path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_the_repository_layout_and_a_config_triton_parses_agreeing_with_the_graph(repository):
    out, report = repository
    assert report.files["triton"] == out / "lenet5" / "1" / "model.onnx"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "lenet5", "lenet5/1", "lenet5/1/model.onnx", "lenet5/config.pbtxt"]  # no temporary left behind
    assert report.max_abs_diff["triton"] <= 1e-4 and report.test_accuracy["triton"] == report.test_accuracy["eager"]
    config = parse_config(out / "lenet5" / "config.pbtxt")
    assert config.name == "lenet5" and config.platform == "onnxruntime_onnx" and config.max_batch_size >= 256
    assert config.HasField("dynamic_batching")
    proto = onnx.load(str(report.files["triton"]))
    onnx.checker.check_model(proto, full_check=True)

    def declared(values):  # Triton's view of the graph: the batch dimension left out
        return [(v.name, ONNX_TO_TRITON[v.type.tensor_type.elem_type],
                 [d.dim_value for d in v.type.tensor_type.shape.dim][1:]) for v in values]

    type_name = model_config_pb2.DataType.Name
    assert [(i.name, type_name(i.data_type), list(i.dims)) for i in config.input] == declared(proto.graph.input)
    assert [(o.name, type_name(o.data_type), list(o.dims)) for o in config.output] == declared(proto.graph.output)
    assert declared(proto.graph.input) == [("input", "TYPE_FP32", [1, 32, 32])]
    assert declared(proto.graph.output) == [("logits", "TYPE_FP32", [10])]


def test_a_config_that_disagrees_with_the_graph_is_refused(repository, tmp_path):
    import shutil

    from ignite_lenet.export.triton import check_repository_config

    out, _ = repository
    copy = tmp_path / "lenet5"
    shutil.copytree(out / "lenet5", copy)
    check_repository_config(copy / "1" / "model.onnx")
    config = copy / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: [ 10 ]", "dims: [ 11 ]"))
    with pytest.raises(ExportMismatch, match="does not agree"):
        check_repository_config(copy / "1" / "model.onnx")


def test_exporting_again_replaces_the_model_directory(repository, trained_checkpoint, mnist_dir):
    out, report = repository
    (out / "lenet5" / "2").mkdir()  # something of the old directory's
    export(trained_checkpoint, out, ("triton",), data_dir=mnist_dir, download=False, log=lambda line: None)
    assert sorted(p.name for p in (out / "lenet5").iterdir()) == ["1", "config.pbtxt"]
    assert [p.name for p in out.iterdir()] == ["lenet5"]


def test_the_command_line_offers_triton():
    done = run_module("ignite_lenet.export", "--help")
    assert done.returncode == 0 and "triton" in done.stdout


def test_serve_serves_the_repository_as_it_is(repository, mnist_dir):
    out, report = repository
    from ignite_lenet.inference import OnnxClassifier

    images, _ = read_mnist(mnist_dir, "test", download=False)
    x = to_model_input(images[:50])
    want = OnnxClassifier(report.files["triton"]).run_model(x)
    from ignite_lenet.inference.loading import load_classifier

    # KServe mounts a storageUri's content at /mnt/models: the model directory itself serves too
    assert load_classifier(out / "lenet5").path == report.files["triton"]
    with ServerProcess(out, "--no-access-log") as server:
        client = http.InferenceServerClient(server.url.removeprefix("http://"))
        meta = client.get_model_metadata("lenet5")
        assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
        inp = http.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer("lenet5", [inp], model_version="1").as_numpy("logits")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
