"""The Open Inference Protocol v2 against a real server (``python -m ignite_lenet.serve`` on 127.0.0.1), with the
clients ML teams run: ``tritonclient.http`` (its binary tensor extension and plain JSON) and, as the second and
independent client, httpx with hand-built OIP JSON and binary bodies (kserve's own client cannot be installed beside
this project's dependencies: it pins psutil<6, ipython needs psutil>=7). Outputs must equal in-process ONNX Runtime
within 1e-5 on real MNIST test images, for ``lenet5.onnx`` and ``lenet5.raw.onnx``; hostile requests get JSON 4xx.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from helpers import ServerProcess

from ignite_lenet.inference import OnnxClassifier
from ignite_lenet.inference.classifier import softmax
from ignite_lenet.mnist.resize import to_model_input

http = pytest.importorskip("tritonclient.http")
TOKEN = "oip-test-token-0123456789"
ATOL = 1e-5


@pytest.fixture(scope="module", params=["onnx", "raw"])
def served(request, raw_exported, mnist_test_digits):
    """A server of ``lenet5.onnx`` or ``lenet5.raw.onnx``, its in-process classifier, and real test inputs for it."""
    path = raw_exported.files[request.param]
    clf = OnnxClassifier(path)
    images, labels = mnist_test_digits
    x = images[:200] if clf.raw_input else to_model_input(images[:200])
    with ServerProcess(path, "--no-access-log") as server:
        yield server, clf, x, labels[:200]


def triton(server, **kwargs):
    return http.InferenceServerClient(server.url.removeprefix("http://"), **kwargs)


def expected(clf: OnnxClassifier, x: np.ndarray) -> dict[str, np.ndarray]:
    logits = clf.run_model(x)
    return {"logits": logits, "probabilities": softmax(logits), "label": logits.argmax(1)}


def test_tritonclient_health_and_metadata(served):
    server, clf, x, _ = served
    client = triton(server)
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "ignite_lenet" and "binary_tensor_data" in meta["extensions"]
    name = "lenet5.raw" if clf.raw_input else "lenet5"
    assert client.is_model_ready(name) and client.is_model_ready(name, "1")
    model = client.get_model_metadata(name)
    assert model == client.get_model_metadata(name, "1")
    assert model["platform"] == "onnxruntime_onnx" and model["versions"] == ["1"]
    want = {"name": "image", "datatype": "UINT8", "shape": [-1, 28, 28]} if clf.raw_input else \
        {"name": "input", "datatype": "FP32", "shape": [-1, 1, 32, 32]}
    assert model["inputs"] == [want]
    assert model["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
                                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                                {"name": "label", "datatype": "INT64", "shape": [-1]}]
    assert not client.is_model_ready("nope")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infer_equals_onnx_runtime(served, binary):
    server, clf, x, labels = served
    client = triton(server)
    model = client.get_model_metadata("lenet5.raw" if clf.raw_input else "lenet5")
    want = expected(clf, x)
    for batch in (x[:1], x[:37], x):
        inp = http.InferInput(model["inputs"][0]["name"], list(batch.shape), model["inputs"][0]["datatype"])
        inp.set_data_from_numpy(batch, binary_data=binary)
        outputs = [http.InferRequestedOutput(name, binary_data=binary) for name in want]
        result = client.infer(model["name"], [inp], outputs=outputs, request_id=f"req-{len(batch)}")
        assert result.get_response()["id"] == f"req-{len(batch)}"
        for name, array in want.items():
            got = result.as_numpy(name)
            assert got.shape == array[: len(batch)].shape and got.dtype == array.dtype, name
            np.testing.assert_allclose(got, array[: len(batch)], atol=ATOL, rtol=0, err_msg=name)
    # no outputs named: all of them (tritonclient then asks for binary outputs); one output named: only it
    inp = http.InferInput(model["inputs"][0]["name"], list(x.shape), model["inputs"][0]["datatype"])
    inp.set_data_from_numpy(x, binary_data=binary)
    every = client.infer(model["name"], [inp], model_version="1")
    assert [o["name"] for o in every.get_response()["outputs"]] == list(want)
    np.testing.assert_allclose(every.as_numpy("logits"), want["logits"], atol=ATOL, rtol=0)
    only = client.infer(model["name"], [inp], outputs=[http.InferRequestedOutput("label", binary_data=binary)])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["label"]
    assert (only.as_numpy("label") == want["label"]).all()
    assert (want["label"] == labels).mean() > 0.8  # real digits, a real (briefly trained) model


def test_httpx_hand_built_json_and_binary_equal_onnx_runtime(served):
    """The second client: OIP bodies written by hand, as the protocol's text describes them."""
    server, clf, x, _ = served
    name = "lenet5.raw" if clf.raw_input else "lenet5"
    input_name, datatype = ("image", "UINT8") if clf.raw_input else ("input", "FP32")
    want = expected(clf, x[:16])
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}
        for data in (x[:16].tolist(), x[:16].reshape(-1).tolist()):  # nested to the shape, and flat
            request = {"id": "hand", "inputs": [{"name": input_name, "datatype": datatype, "shape": list(x[:16].shape),
                                                 "data": data}],
                       "outputs": [{"name": "logits"}, {"name": "probabilities"}, {"name": "label"}]}
            response = client.post(f"/v2/models/{name}/infer", json=request)
            assert response.status_code == 200 and response.headers["content-type"] == "application/json"
            body = response.json()
            assert body["model_name"] == name and body["model_version"] == "1" and body["id"] == "hand"
            for output in body["outputs"]:
                array = np.array(output["data"]).reshape(output["shape"])
                np.testing.assert_allclose(array, want[output["name"]], atol=ATOL, rtol=0)
        # binary both ways, by hand: a JSON header, then the tensor's bytes
        blob = np.ascontiguousarray(x[:16]).tobytes()
        header = json.dumps({"inputs": [{"name": input_name, "datatype": datatype, "shape": list(x[:16].shape),
                                         "parameters": {"binary_data_size": len(blob)}}],
                             "parameters": {"binary_data_output": True}}).encode()
        response = client.post(f"/v2/models/{name}/versions/1/infer", content=header + blob,
                               headers={"Inference-Header-Content-Length": str(len(header)),
                                        "Content-Type": "application/octet-stream"})
        assert response.status_code == 200, response.text
        length = int(response.headers["inference-header-content-length"])
        meta, offset = json.loads(response.content[:length]), length
        for output in meta["outputs"]:
            size = output["parameters"]["binary_data_size"]
            dtype = {"FP32": np.float32, "INT64": np.int64}[output["datatype"]]
            array = np.frombuffer(response.content[offset : offset + size], dtype).reshape(output["shape"])
            offset += size
            np.testing.assert_allclose(array, want[output["name"]], atol=ATOL, rtol=0)
        assert offset == len(response.content)


@pytest.fixture(scope="module")
def guarded(serving_model, tmp_path_factory):
    """A server with a token, its own model name and a small body limit."""
    token_file = tmp_path_factory.mktemp("oip") / "token.txt"
    token_file.write_text(TOKEN + "\n")
    with ServerProcess(serving_model, "--no-access-log", "--token-file", str(token_file), "--model_name", "digits",
                       "--max-body-bytes", str(1024 * 1024)) as server:
        yield server


AUTH = {"Authorization": f"Bearer {TOKEN}"}  # pass tritonclient a copy: it adds its own headers to the dict


def test_token_guards_metadata_and_inference_not_health(guarded, mnist_test_digits):
    with httpx.Client(base_url=guarded.url, timeout=30) as client:
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/digits/ready"):
            assert client.get(path).status_code == 200, path
        for method, path in (("GET", "/v2"), ("GET", "/v2/models/digits"), ("GET", "/v2/models/digits/versions/1"),
                             ("POST", "/v2/models/digits/infer")):
            response = client.request(method, path)
            assert response.status_code == 401 and "token" in response.json()["error"], path
    client = triton(guarded)
    assert client.get_model_metadata("digits", headers=dict(AUTH))["name"] == "digits"
    x = to_model_input(mnist_test_digits[0][:8])
    inp = http.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("digits", [inp], headers=dict(AUTH))
    assert result.as_numpy("label").shape == (8,)


def with_binary(header: dict, data: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + data, {"Inference-Header-Content-Length": str(len(text))}


HOSTILE = [  # (body, extra headers, status, words in the error)
    (b"{", {}, 400, "not valid JSON"),
    (json.dumps({"inputs": [{"name": "input", "datatype": "FP16", "shape": [1, 1, 32, 32],
                             "data": [0] * 1024}]}).encode(), {}, 400, "takes FP32"),
    (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 32, 32],
                             "data": [0] * 1024}]}).encode(), {}, 400, "needs 2,048"),
    (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32],
                             "data": [float("nan")] * 1024}]}).encode(), {}, 400, "NaN"),
    (*with_binary({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2 ** 40, 1, 32, 32],
                                "parameters": {"binary_data_size": 4096}}]}, bytes(4096)), 400, "needs"),
    (*with_binary({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32],
                                "parameters": {"binary_data_size": 4096}}]}, bytes(4000)), 400, "past the end"),
    (*with_binary({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32],
                                "parameters": {"binary_data_size": 4096}}]},
                  np.full(1024, np.nan, np.float32).tobytes()), 400, "NaN"),
    (b'{"inputs": []}', {"Inference-Header-Content-Length": "99999"}, 400, "only"),
    (b'{"inputs": []}', {"Inference-Header-Content-Length": "-5"}, 400, "byte count"),
    (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32], "data": [0] * 1024}],
                 "outputs": [{"name": "embedding"}]}).encode(), {}, 400, "unknown output 'embedding'"),
    (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 32, 32],
                             "data": [0] * 1024}]}).encode(), {}, 400, "unknown input 'x'"),
    (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32],
                             "data": [[[0] * 32] * 32]}]}).encode(), {}, 400, "nested as"),
    (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 32, 32],
                             "data": [False] * 1024}]}).encode(), {}, 400, "only numbers"),
    (b"[" * 500_000 + b"]" * 500_000, {}, 400, "nested too deeply"),
    (bytes(2 * 1024 * 1024), {}, 413, "limit"),
]


@pytest.mark.parametrize("body, headers, status, words", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_oip_requests_get_json_4xx(guarded, hostile_count, body, headers, status, words):
    hostile_count["requests"] += 1
    response = httpx.post(guarded.url + "/v2/models/digits/infer", content=body, headers={**AUTH, **headers},
                          timeout=30)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json" and words in response.json()["error"]


def test_unknown_models_and_versions_are_404_and_the_server_is_still_right(guarded, mnist_test_digits):
    with httpx.Client(base_url=guarded.url, timeout=30, headers=dict(AUTH)) as client:
        for method, path in (("GET", "/v2/models/lenet5"), ("GET", "/v2/models/digits/versions/2"),
                             ("POST", "/v2/models/lenet5/infer"), ("POST", "/v2/models/digits/versions/0/infer"),
                             ("GET", "/v2/models/nope/ready"), ("GET", "/v2/nothing")):
            response = client.request(method, path, content=b"{}")
            assert response.status_code == 404 and response.json()["error"], path
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}",
                "/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer"} <= set(paths)
        metrics = client.get("/metrics").text
    assert 'route="/v2/models/{model_name}/infer"' in metrics
    images = mnist_test_digits[0][:4]
    x = to_model_input(images)
    inp = http.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = triton(guarded).infer("digits", [inp], headers=dict(AUTH)).as_numpy("label")
    assert got.shape == (4,)


def test_ready_is_503_while_the_server_cannot_take_work(serving_model):
    from fastapi.testclient import TestClient

    from ignite_lenet.serving import Settings, create_app

    app = create_app(Settings(model=str(serving_model)))
    cold = TestClient(app)  # not entered: the lifespan has not loaded the model
    assert cold.get("/v2/health/live").json() == {"live": True}
    for path in ("/v2/health/ready", "/v2/models/lenet5", "/v2/models/lenet5/ready"):
        assert cold.get(path).status_code == 503, path
    with TestClient(app) as client:
        assert client.get("/v2/health/ready").status_code == 200
        batcher = app.state.batcher
        capacity, batcher.max_queued = batcher.max_queued, 0  # saturated: no room for any image
        response = client.get("/v2/health/ready")
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert client.get("/readyz").status_code == 503  # the same readiness
        batcher.max_queued = capacity
        assert client.get("/v2/models/lenet5/ready").json() == {"name": "lenet5", "ready": True}
    assert cold.get("/v2/health/ready").status_code == 503  # shut down
