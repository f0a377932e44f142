"""The service's contract through FastAPI's TestClient (the app in-process, its lifespan run), on real MNIST digits
PNG-encoded from the IDX test set. The same contract over a real uvicorn server is test_serving_http.py."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import PYTHON, png_bytes, python_env
from PIL import Image

from ignite_lenet.inference import OnnxClassifier
from ignite_lenet.inference.predict import predict_files
from ignite_lenet.serving import Settings, create_app

PNG = {"Content-Type": "image/png"}


@pytest.fixture(scope="module")
def client(serving_model):
    with TestClient(create_app(Settings(model=str(serving_model)))) as client:
        yield client


def predict_one(client, data: bytes, content_type: str = "image/png", **params):
    return client.post("/v1/predict", content=data, headers={"Content-Type": content_type}, params=params)


def test_healthz_once_the_model_is_loaded(client, serving_model):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["model"] == serving_model.name and len(body["classes"]) == 10


def test_one_png_gives_the_same_prediction_record_as_the_predict_command(client, serving_model, digits, tmp_path):
    """One record for both (``inference.predict.prediction_record``): the same keys, the same numbers; the server's
    label is the class index where the command line names the class."""
    clf = OnnxClassifier(serving_model)
    paths = []
    for i, digit in enumerate(digits[:20]):
        paths.append(tmp_path / f"digit{i}.png")
        paths[-1].write_bytes(digit.png)
    records, errors = predict_files(clf, paths, invert=None, batch_size=8)  # what python -m ignite_lenet.predict does
    assert not errors and len(records) == 20
    for digit, record in zip(digits, records):
        response = predict_one(client, digit.png)
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        assert list(prediction) == [k for k in record if k != "path"] == ["label", "probability", "probabilities",
                                                                          "inverted"]
        assert isinstance(prediction["label"], int) and str(prediction["label"]) == record["label"]
        assert prediction["inverted"] is record["inverted"] is False
        np.testing.assert_allclose(prediction["probabilities"], record["probabilities"], atol=1e-6)
        assert prediction["probability"] == max(prediction["probabilities"])


def test_real_digits_are_classified_about_as_well_as_offline(client, digits):
    labels = [predict_one(client, d.png).json()["predictions"][0]["label"] for d in digits]
    accuracy = np.mean([label == d.label for label, d in zip(labels, digits)])
    assert accuracy >= 0.85, accuracy  # the fixture model is a 300-step run, about 90% accurate


def test_any_image_type_and_mode_gives_the_digit(client, sure_digits):
    digit = sure_digits[0]
    image = Image.fromarray(digit.image)
    rgba = Image.new("RGBA", (28, 28), (0, 0, 0, 0))
    rgba.putalpha(image)  # light ink in the alpha channel only, on a transparent canvas
    variants = {
        "image/png": png_bytes(image),
        "image/jpeg": png_bytes(image.convert("RGB"), "JPEG", quality=95),
        "image/gif": png_bytes(image.convert("P"), "GIF"),
        "image/bmp": png_bytes(image, "BMP"),
        "image/tiff": png_bytes(Image.fromarray(digit.image.astype(np.uint16) * 257), "TIFF"),  # 16-bit
        "image/webp": png_bytes(image, "WEBP", lossless=True),
        "application/octet-stream": png_bytes(rgba),
        "image/png; charset=binary": png_bytes(image.resize((280, 280))),  # a large drawing: normalised like MNIST
    }
    for content_type, data in variants.items():
        response = predict_one(client, data, content_type)
        assert response.status_code == 200, (content_type, response.text)
        assert response.json()["predictions"][0]["label"] == digit.label, content_type
    dark_on_white = predict_one(client, png_bytes(255 - digit.image)).json()["predictions"][0]
    assert dark_on_white["label"] == digit.label and dark_on_white["inverted"] is True
    assert predict_one(client, png_bytes(255 - digit.image), invert="true").json()["predictions"][0]["inverted"]
    kept = predict_one(client, png_bytes(255 - digit.image), invert="false")  # a white page, taken as it is
    assert kept.status_code == 422 and "no digit found" in kept.json()["error"]


def test_multipart_gives_one_entry_per_file_in_order_and_a_bad_file_fails_alone(client, sure_digits):
    files = [("file", (f"digit-{i}.png", d.png, "image/png")) for i, d in enumerate(sure_digits)]
    files.insert(2, ("file", ("notes.txt", b"not an image", "text/plain")))
    files.insert(4, ("file", ("blank.png", png_bytes(np.zeros((28, 28), np.uint8)), "image/png")))
    response = client.post("/v1/predict", files=files, data={"comment": "ignored"})
    assert response.status_code == 200, response.text
    entries = response.json()["predictions"]
    assert [e["file"] for e in entries] == [name for _, (name, _, _) in files]
    assert entries[2]["status"] == 400 and "not a readable image" in entries[2]["error"] and "label" not in entries[2]
    assert entries[4]["status"] == 422 and "no digit found" in entries[4]["error"]
    good = [e for e in entries if "label" in e]
    assert [e["label"] for e in good] == [d.label for d in sure_digits]


@pytest.mark.parametrize("data, content_type, status, message", [
    (b"GIF89a garbage", "image/gif", 400, "not a readable image"),
    (b"", "image/png", 400, "empty"),
    (b"{}", "application/json", 415, "Content-Type application/json is not accepted"),
    (b"x", "text/plain", 415, "text/plain"),
    (b"x", "", 415, "Content-Type none"),
    (None, "image/png", 422, "no digit found"),  # a blank page
    (b"multipart", "multipart/form-data", 400, "boundary"),
])
def test_errors_are_one_line_json_with_their_status(client, data, content_type, status, message):
    if data is None:
        data = png_bytes(np.full((40, 40), 255, np.uint8))
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/v1/predict", content=data, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and message in body["error"] and "\n" not in body["error"]


def test_too_large_bodies_and_images_are_413(serving_model):
    settings = Settings(model=str(serving_model), max_body_bytes=10_000, max_image_pixels=100_000)
    with TestClient(create_app(settings)) as client:
        big = client.post("/v1/predict", content=b"x" * 10_001, headers=PNG)
        assert big.status_code == 413 and "10,000 bytes" in big.json()["error"]
        bomb = png_bytes(Image.new("1", (2000, 2000)))  # 4 megapixels in a few hundred bytes
        assert len(bomb) < 10_000
        refused = client.post("/v1/predict", content=bomb, headers=PNG)
        assert refused.status_code == 413 and "above the limit of 100,000" in refused.json()["error"]
        parts = client.post("/v1/predict", files=[("file", ("bomb.png", bomb, "image/png"))])
        assert parts.status_code == 200 and parts.json()["predictions"][0]["status"] == 413
        metrics = client.get("/metrics").text  # the 413 answered before routing still counts under its route
        assert 'ignite_lenet_http_requests_total{method="POST",route="/v1/predict",status="413"} 2.0' in metrics


def test_the_token_guards_v1_but_not_healthz(serving_model, sure_digits, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with TestClient(create_app(Settings(model=str(serving_model), token_file=str(token_file)))) as client:
        png = sure_digits[0].png
        assert client.get("/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0LXRva2Vu"},
                        {"Authorization": "Bearer s3cret-token-and-more"}, {"Authorization": "Bearer"}):
            response = client.post("/v1/predict", content=png, headers={**PNG, **headers})
            assert response.status_code == 401 and "token" in response.json()["error"], headers
            assert response.headers["www-authenticate"].startswith("Bearer")
        ok = client.post("/v1/predict", content=png, headers={**PNG, "Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and ok.json()["predictions"][0]["label"] == sure_digits[0].label
        assert "bearer" in json.dumps(client.get("/openapi.json").json()["components"]["securitySchemes"]).lower()


def test_framework_errors_are_json_too(client, serving_model):
    assert client.get("/nowhere").json()["error"].startswith("Not Found: GET /nowhere")
    wrong_method = client.get("/v1/predict")
    assert wrong_method.status_code == 405 and "Method Not Allowed" in wrong_method.json()["error"]
    invalid = client.post("/v1/predict", params={"invert": "maybe"}, content=b"x", headers=PNG)
    assert invalid.status_code == 422 and invalid.json()["error"].startswith("query.invert: expected true or false")
    app = create_app(Settings(model=str(serving_model)))

    @app.get("/typed")
    async def typed(n: int, flag: bool = False) -> dict:  # a route FastAPI validates itself
        return {"n": n}

    with TestClient(app) as typed_client:
        response = typed_client.get("/typed", params={"n": "seven", "flag": "maybe"})
    assert response.status_code == 422 and list(response.json()) == ["error"]
    assert response.json()["error"].startswith("query.n: Input should be a valid integer")
    assert "query.flag:" in response.json()["error"] and "\n" not in response.json()["error"]


def test_multipart_bodies_as_clients_write_them(client, sure_digits):
    png, label = sure_digits[0].png, sure_digits[0].label
    part = b'Content-Disposition: form-data; name="file"; filename="d.png"\r\nContent-Type: image/png\r\n\r\n'
    bodies = {
        "preamble and epilogue": b"a preamble line\r\n--XyZ\r\n" + part + png + b"\r\n--XyZ--\r\nan epilogue",
        "padding after the boundary": b"--XyZ  \r\n" + part + png + b"\r\n--XyZ--",
        "a quoted boundary": b"--XyZ\r\n" + part + png + b"\r\n--XyZ--\r\n",
    }
    for name, body in bodies.items():
        content_type = 'multipart/form-data; boundary="XyZ"' if "quoted" in name else "multipart/form-data; boundary=XyZ"
        response = client.post("/v1/predict", content=body, headers={"Content-Type": content_type})
        assert response.status_code == 200, (name, response.text)
        assert response.json()["predictions"] == [{**response.json()["predictions"][0], "file": "d.png", "label": label}]
    utf8 = client.post("/v1/predict", files=[("file", ("名前.png", png, "image/png"))])
    assert utf8.json()["predictions"][0]["file"] == "名前.png"


def test_metrics_count_requests_latency_and_images(serving_model, sure_digits):
    with TestClient(create_app(Settings(model=str(serving_model)))) as client:
        for digit in sure_digits[:3]:
            predict_one(client, digit.png)
        client.post("/v1/predict", files=[("file", ("a.png", sure_digits[0].png)), ("file", ("b.txt", b"text"))])
        client.get("/nowhere")
        text = client.get("/metrics").text
    assert 'ignite_lenet_http_requests_total{method="POST",route="/v1/predict",status="200"} 4.0' in text
    assert 'ignite_lenet_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert "ignite_lenet_images_classified_total 4.0" in text
    assert 'ignite_lenet_image_errors_total{status="400"} 1.0' in text
    assert 'ignite_lenet_http_request_duration_seconds_count{route="/v1/predict"} 4.0' in text


def test_openapi_describes_the_api(client):
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/v1/predict"]["post"]
    assert {"image/png", "image/jpeg", "application/octet-stream", "multipart/form-data"} <= set(
        predict["requestBody"]["content"])
    assert {"200", "400", "413", "415", "422"} <= set(predict["responses"])
    assert {"/healthz", "/metrics", "/"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_the_page_is_one_self_contained_file(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert '<canvas id="canvas"' in html and 'id="prediction"' in html and 'id="clear"' in html
    assert "http://" not in html and "https://" not in html and "<script src" not in html  # nothing fetched
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_the_raw_input_model_is_served_the_same(raw_exported, sure_digits):
    with TestClient(create_app(Settings(model=str(raw_exported.files["raw"])))) as client:
        assert client.get("/healthz").json()["input"] == "uint8 [batch, 28, 28]"
        for digit in sure_digits:
            assert predict_one(client, digit.png).json()["predictions"][0]["label"] == digit.label


def test_the_serving_path_imports_no_torch(serving_model, sure_digits):
    script = f"""
import sys
from fastapi.testclient import TestClient
from ignite_lenet.serving import Settings, create_app
with TestClient(create_app(Settings(model={str(serving_model)!r}))) as client:
    assert client.get("/healthz").status_code == 200
    answer = client.post("/v1/predict", content={sure_digits[0].png!r}, headers={{"Content-Type": "image/png"}})
    assert answer.json()["predictions"][0]["label"] == {sure_digits[0].label}, answer.text
    client.post("/v1/predict", files=[("file", ("a.png", {sure_digits[0].png!r}))])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "ignite", "matplotlib", "onnx"))
print("loaded:", loaded)
assert not loaded, loaded
"""
    result = subprocess.run([PYTHON, "-c", script], env=python_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values, message", [
    ({"port": 70000}, "--port must be an integer from 0 to 65,535"),
    ({"workers": 0}, "--workers"),
    ({"body_timeout": float("nan")}, "--body-timeout"),
    ({"max_body_bytes": True}, "--max-body-bytes"),
    ({"host": " "}, "--host"),
    ({"log_level": "loud"}, "--log-level"),
])
def test_settings_refuse_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        Settings(**values)


def test_settings_travel_to_workers_through_the_environment(tmp_path):
    settings = Settings(model="m.onnx", workers=3, body_timeout=2.5, token_file="t").for_server()
    assert Settings.from_environment(settings.to_environment()) == settings
    assert settings.model.startswith("/") and settings.token_file.startswith("/")
    assert settings.allowed_hosts() == {"localhost", "127.0.0.1", "::1"}  # listening on loopback: its names
    with pytest.raises(ValueError, match="python -m ignite_lenet.serve"):
        Settings.from_environment({})
