"""The service over real HTTP: ``python -m ignite_lenet.serve`` in a subprocess on a free 127.0.0.1 port, real
MNIST digits, one worker and two, SIGTERM with a request in flight, and the command line's one-line errors."""

from __future__ import annotations

import re
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from helpers import PYTHON, ServerProcess, assert_one_line_error, python_env, run_module


def post_image(url: str, data: bytes, content_type: str = "image/png", **kwargs) -> httpx.Response:
    return httpx.post(url + "/v1/predict", content=data, headers={"Content-Type": content_type}, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def server(serving_model):
    with ServerProcess(serving_model) as server:
        yield server


def test_real_digits_over_real_http(server, sure_digits):
    health = httpx.get(server.url + "/healthz").json()
    assert health["status"] == "ok" and health["model"] == "lenet5.onnx"
    with httpx.Client(base_url=server.url, timeout=30) as client:  # one keep-alive connection
        for digit in sure_digits:
            response = client.post("/v1/predict", content=digit.png, headers={"Content-Type": "image/png"})
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["label"] == digit.label
        files = [("file", (f"{i}.png", d.png, "image/png")) for i, d in enumerate(sure_digits)]
        entries = client.post("/v1/predict", files=files).json()["predictions"]
        assert [(e["file"], e["label"]) for e in entries] == [(f"{i}.png", d.label) for i, d in enumerate(sure_digits)]
        assert client.post("/v1/predict", content=b"junk", headers={"Content-Type": "image/png"}).status_code == 400
        assert client.post("/v1/predict", content=b"{}", headers={"Content-Type": "application/json"}).status_code == 415
        page = client.get("/")
        assert page.status_code == 200 and 'id="canvas"' in page.text
        assert client.get("/openapi.json").json()["paths"]["/v1/predict"]
        metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert f"ignite_lenet_images_classified_total {2 * len(sure_digits)}.0" in metrics.text
    assert "uvicorn" not in str(metrics.headers).lower()  # no Server header: nothing to fingerprint


def test_access_log_has_a_line_per_request(server):
    httpx.get(server.url + "/healthz?from=access-log-test")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("access-log-test" in line for line in server.lines):
        time.sleep(0.05)
    assert any('"GET /healthz?from=access-log-test HTTP/1.1" 200' in line for line in server.lines), server.lines[-5:]


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(serving_model, sure_digits):
    digit = sure_digits[0]
    with ServerProcess(serving_model, "--no-access-log") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                    f"Content-Length: {len(digit.png)}\r\n\r\n").encode()
            half = len(digit.png) // 2
            sock.sendall(head + digit.png[:half])  # the request is in flight: its body half sent
            time.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert server.process.poll() is None, "exited with a request in flight"
            with pytest.raises(OSError):  # it accepts no new connection meanwhile
                socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
            sock.sendall(digit.png[half:])
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200 ") and f'"label":{digit.label}'.encode() in response
        assert server.process.wait(30) == 0
    assert any("Shutting down" in line for line in server.lines)


def _metrics_dirs() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("ignite_lenet-metrics-*")}


def test_two_workers_share_the_port_and_their_metrics(serving_model, sure_digits):
    before = _metrics_dirs()
    with ServerProcess(serving_model, "--workers", "2", "--no-access-log") as server:
        pids = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:  # new connections land on either worker
            pids.add(httpx.get(server.url + "/healthz", headers={"Connection": "close"}).json()["pid"])
        assert len(pids) == 2 and server.process.pid not in pids
        for digit in sure_digits:
            with httpx.Client(base_url=server.url) as client:
                assert client.post("/v1/predict", content=digit.png, headers={"Content-Type": "image/png"}).json()[
                    "predictions"][0]["label"] == digit.label
        for _ in range(4):  # whichever worker answers, it reports every worker's samples
            text = httpx.get(server.url + "/metrics", headers={"Connection": "close"}).text
            assert f"ignite_lenet_images_classified_total {len(sure_digits)}.0" in text
        assert len(_metrics_dirs() - before) == 1  # the server run's private multiprocess directory
        assert server.stop() == 0
    assert _metrics_dirs() <= before  # removed at exit


def _foreign_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 224, 224])])
    onnx.save(helper.make_model(graph), path)
    return path


def test_a_bad_start_is_one_line_and_exit_2(serving_model, tmp_path):
    (tmp_path / "empty-token").write_text("\n")
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    cases = [
        (["--model", str(tmp_path / "missing.onnx")], "no such model file"),
        (["--model", str(_foreign_onnx(tmp_path / "foreign.onnx"))], "not [batch, classes] float scores"),
        (["--model", str(tmp_path / "garbage.onnx")], "not a loadable ONNX model"),
        (["--model", str(serving_model), "--token-file", str(tmp_path / "empty-token")], "the file is empty"),
        (["--model", str(serving_model), "--workers", "0"], "--workers"),
        (["--model", str(serving_model), "--body-timeout", "soon"], "--body-timeout"),
        (["--model", str(serving_model), "--no-such-flag"], "unrecognized arguments"),
    ]
    for args, expected in cases:
        result = run_module("ignite_lenet.serve", *args)
        assert_one_line_error(result.returncode, result.stderr, expected)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_module("ignite_lenet.serve", "--model", str(serving_model), "--port", str(taken.getsockname()[1]))
        assert_one_line_error(result.returncode, result.stderr, "cannot listen on 127.0.0.1:", "in use")


def test_every_flag_has_help():
    result = run_module("ignite_lenet.serve", "--help")
    assert result.returncode == 0
    flags = set(re.findall(r"(--[a-z][a-z-]+)", result.stdout))
    for flag in ("--model", "--host", "--port", "--workers", "--token-file", "--max-body-bytes", "--body-timeout",
                 "--header-timeout", "--keep-alive", "--graceful-timeout", "--max-connections", "--onnx-threads"):
        assert flag in flags
    assert "(default: 127.0.0.1)" in result.stdout and "(default: 8000)" in result.stdout
    console = subprocess_console_script()
    assert console is None or console.returncode == 0


def subprocess_console_script():
    """``ignite-lenet-serve --help`` when the console script is installed next to this Python."""
    import subprocess

    script = Path(PYTHON).parent / "ignite-lenet-serve"
    if not script.exists():
        return None
    return subprocess.run([str(script), "--help"], env=python_env(), capture_output=True, text=True, timeout=60)
