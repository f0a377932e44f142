"""``POST /v1/predict`` by ``serving.fast_predict`` answers exactly as the FastAPI route it stands in front of: the
same statuses, headers and bodies byte for byte, the same metrics, the token; and the per-image fast paths it
relies on (decoding, normalisation, the JSON template) give the same bits as the general code."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import png_bytes
from PIL import Image

from ignite_lenet.mnist.digits import _UNIT_BYTES, normalize_digit, read_gray
from ignite_lenet.serving import Settings, create_app
from ignite_lenet.serving.classify import _rows, encode, encode_single
from ignite_lenet.serving.fast_predict import FastPredict

PNG = {"Content-Type": "image/png"}


def route_only(app):
    """The app with FastPredict taken out: every request answered by FastAPI's route, as before it existed."""
    app.user_middleware = [m for m in app.user_middleware if m.cls is not FastPredict]
    return app


def multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> tuple[bytes, dict[str, str]]:
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                    f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for name, data in parts)
    return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def requests_to_compare(digits) -> list[tuple[str, str, dict]]:
    """(method, path, httpx arguments): every branch of the route, good and bad."""
    png, blank = digits[0].png, png_bytes(np.zeros((28, 28), np.uint8))
    form, form_headers = multipart([("a.png", png), ("notes.txt", b"not an image"), ("blank.png", blank),
                                    ("b.png", digits[1].png)])
    return [
        ("POST", "/v1/predict", {"content": png, "headers": PNG}),
        ("POST", "/v1/predict", {"content": png_bytes(255 - digits[2].image), "headers": PNG}),
        ("POST", "/v1/predict", {"content": png, "headers": PNG, "params": {"invert": "true"}}),
        ("POST", "/v1/predict", {"content": png, "headers": PNG, "params": {"invert": "OFF"}}),
        ("POST", "/v1/predict", {"content": png, "headers": PNG, "params": {"invert": "maybe"}}),
        ("POST", "/v1/predict", {"content": png, "headers": PNG, "params": {"other": "1"}}),
        ("POST", "/v1/predict", {"content": png, "headers": {"Content-Type": "Image/PNG; q=1"}}),
        ("POST", "/v1/predict", {"content": png, "headers": {"Content-Type": "application/octet-stream"}}),
        ("POST", "/v1/predict", {"content": png, "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/v1/predict", {"content": png}),  # no Content-Type
        ("POST", "/v1/predict", {"content": b"", "headers": PNG}),
        ("POST", "/v1/predict", {"content": b"\x89PNG garbage", "headers": PNG}),
        ("POST", "/v1/predict", {"content": blank, "headers": PNG}),
        ("POST", "/v1/predict", {"content": png_bytes(np.zeros((1100, 1000), np.uint8)), "headers": PNG}),  # 413
        ("POST", "/v1/predict", {"content": form, "headers": form_headers}),
        ("POST", "/v1/predict", {"content": form[:-10], "headers": form_headers}),  # truncated
        ("POST", "/v1/predict", {"content": form, "headers": {"Content-Type": "multipart/form-data"}}),
        ("POST", "/v1/predict", {"content": b"x" * 5000, "headers": PNG}),  # over --max-body-bytes: 413
        ("POST", "/v1/predict", {"content": [png[:100], png[100:]], "headers": PNG}),  # chunked
        ("POST", "/v1/predict", {"content": [b"x" * 3000, b"x" * 3000], "headers": PNG}),  # chunked, too long
        ("GET", "/v1/predict", {}),  # 405: not ours
        ("POST", "/v1/predict/", {"content": png, "headers": PNG}),  # not the path: FastAPI's redirect
        ("PUT", "/v1/predict", {"content": png, "headers": PNG}),
    ]


def answers(app, calls) -> tuple[list[tuple[int, list, bytes]], str]:
    with TestClient(app, follow_redirects=False) as client:
        out = []
        for method, path, kwargs in calls:
            if isinstance(kwargs.get("content"), list):  # a chunked body: a fresh iterator each time
                kwargs = {**kwargs, "content": iter(kwargs["content"])}
            response = client.request(method, path, **kwargs)
            out.append((response.status_code, sorted(response.headers.multi_items()), response.content))
        metrics = client.get("/metrics").text
    series = "\n".join(line for line in metrics.splitlines() if "_created" not in line  # timestamps
                       and (line.startswith(("ignite_lenet_http_requests_total", "ignite_lenet_image"))
                            or re.match(r"ignite_lenet_http_request_duration_seconds_count", line)))
    return out, series


@pytest.mark.parametrize("with_token", [False, True], ids=["open", "token"])
def test_the_fast_path_answers_exactly_as_the_fastapi_route(serving_model, digits, tmp_path, with_token):
    settings = Settings(model=str(serving_model), max_body_bytes=4096 if not with_token else 5000,
                        max_image_pixels=1_000_000)
    calls = requests_to_compare(digits)
    if with_token:
        (tmp_path / "token").write_text("s3cret\n")
        settings = Settings(model=str(serving_model), max_body_bytes=5000, max_image_pixels=1_000_000,
                            token_file=str(tmp_path / "token"))
        png = digits[0].png
        calls = [("POST", "/v1/predict", {"content": png, "headers": {**PNG, "Authorization": auth}})
                 for auth in ("Bearer s3cret", "bearer s3cret", "Bearer  s3cret ", "Bearer wrong", "Basic s3cret",
                              "Bearer", "", "s3cret")]
        calls += [("POST", "/v1/predict", {"content": png, "headers": PNG}),  # none: 401 before the body is read
                  ("POST", "/v1/predict", {"content": png, "headers": {"Content-Type": "text/plain"}}),
                  ("POST", "/v1/predict", {"content": b"x" * 6000, "headers": PNG})]
    fast, fast_metrics = answers(create_app(settings), calls)
    route, route_metrics = answers(route_only(create_app(settings)), calls)
    for call, got, expected in zip(calls, fast, route):
        assert got == expected, call[:2] + (call[2].get("params"), call[2].get("headers"))
    assert fast_metrics == route_metrics
    statuses = {status for status, _, _ in fast}
    assert statuses >= ({200, 401} if with_token else {200, 400, 405, 413, 415, 422}), statuses
    assert 'route="/v1/predict",status="200"' in fast_metrics


def test_the_fast_path_is_in_front_and_the_route_still_in_the_schema(serving_model):
    app = create_app(Settings(model=str(serving_model)))
    assert app.user_middleware[-1].cls is FastPredict  # the innermost: every other middleware wraps it
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/predict"]["post"]
    assert {"400", "401", "413", "415", "422", "503"} <= set(operation["responses"])
    assert operation["parameters"][0]["name"] == "invert" and "multipart/form-data" in operation["requestBody"][
        "content"]


def test_eight_bit_values_become_the_floats_numpy_makes():
    codes = np.arange(256, dtype=np.uint8)
    assert _UNIT_BYTES.dtype == np.float32
    np.testing.assert_array_equal(_UNIT_BYTES, np.asarray(codes, np.float32) / 255)


def test_mnist_pixels_come_back_exactly_from_every_8_bit_mode(mnist_test_digits):
    """A real MNIST PNG in mode L, 1 (thresholded), P, LA and RGB decodes and normalises to its own pixels (or
    the inverse, for a dark digit on white), as the general conversions give them."""
    images, _ = mnist_test_digits
    for image in images[:100]:
        for mode in ("L", "P", "LA", "RGB"):
            data = png_bytes(Image.fromarray(image).convert(mode))
            digit, inverted = normalize_digit(read_gray(io.BytesIO(data)))
            np.testing.assert_array_equal(digit, image)
            assert inverted is False
            dark, inverted = normalize_digit(read_gray(io.BytesIO(png_bytes(Image.fromarray(255 - image)
                                                                              .convert(mode)))))
            np.testing.assert_array_equal(dark, image)
            assert inverted is True
        bilevel = Image.fromarray(image).convert("1")
        digit, _ = normalize_digit(read_gray(io.BytesIO(png_bytes(bilevel))))
        np.testing.assert_array_equal(digit, np.asarray(bilevel.convert("L")))


def test_the_json_template_is_json_dumps_byte_for_byte(serving_model, mnist_test_digits):
    from ignite_lenet.inference import OnnxClassifier

    images, _ = mnist_test_digits
    rows = _rows(OnnxClassifier(serving_model), list(images), [bool(i % 3) for i in range(len(images))])
    for row in rows:
        assert encode_single(row) == encode({"predictions": [row]})
