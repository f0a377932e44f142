"""No request starves the others: a real server (``python -m ignite_lenet.serve``) under a request of 400 images
that are cheap to send and expensive to decode (blank 1-bit PNGs of a few hundred bytes each that decode to a
megapixel), with one-image requests of real MNIST digits beside it; the client that hangs up; SIGTERM under load."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time

import pytest
from helpers import ServerProcess, png_bytes
from PIL import Image

BIG_FILES = 400


def big_multipart(side: int, files: int = BIG_FILES) -> tuple[bytes, str]:
    """``files`` copies of a blank ``side`` x ``side`` 1-bit PNG as one multipart body, and its Content-Type."""
    png = png_bytes(Image.new("1", (side, side)))
    boundary = "fairness-boundary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"page.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + b"\r\n"
    return part * files + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def send(port: int, body: bytes, content_type: str) -> socket.socket:
    """A POST /v1/predict sent whole on a fresh connection; the answer is read with ``answer``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall((f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
    return sock


def answer(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def predict_one(port: int, png: bytes) -> tuple[int, dict, float]:
    """One image, one connection: status, JSON, seconds."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/v1/predict", png, {"Content-Type": "image/png"})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), time.perf_counter() - started
    finally:
        connection.close()


def abandoned(port: int, reason: str) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    match = re.search(r'ignite_lenet_images_abandoned_total\{reason="%s"\} ([0-9.e+]+)' % reason, text)
    return float(match.group(1)) if match else 0.0


def test_a_request_over_the_pixel_budget_is_refused_before_any_decoding(serving_model, sure_digits):
    body, kind = big_multipart(2000)  # 400 x 4 megapixels in ~230 kB: each image alone is within the limits
    with ServerProcess(serving_model, "--no-access-log") as server:
        started = time.perf_counter()
        status, reply = answer(send(server.port, body, kind))
        seconds = time.perf_counter() - started
        assert status == 413 and "--max-request-pixels" in reply["error"] and "1,600,000,000 pixels" in reply["error"]
        assert seconds < 5, seconds  # headers only: decoding them all takes ~20 s
        status, reply, _ = predict_one(server.port, sure_digits[0].png)
        assert status == 200 and reply["predictions"][0]["label"] == sure_digits[0].label


def test_one_image_requests_do_not_wait_behind_a_big_one_and_a_hung_up_client_stops_its_work(
        serving_model, sure_digits):
    body, kind = big_multipart(1000)  # 400 megapixels: seconds of decoding, allowed by the raised budget
    with ServerProcess(serving_model, "--no-access-log", "--max-request-pixels", "500000000") as server:
        big = send(server.port, body, kind)
        time.sleep(0.3)  # its slices are running
        waits = []
        for digit in sure_digits * (20 // len(sure_digits) + 1):
            status, reply, seconds = predict_one(server.port, digit.png)
            assert status == 200 and reply["predictions"][0]["label"] == digit.label
            waits.append(seconds)
            if len(waits) == 20:
                break
        status, reply = answer(big)  # answered in full, within its budget
        assert status == 200 and len(reply["predictions"]) == BIG_FILES
        assert all(p["status"] == 422 for p in reply["predictions"])  # blank pages: no digit
        print(f"\n20 one-image requests beside a {BIG_FILES}-image request: max {max(waits) * 1000:.0f} ms, "
              f"median {sorted(waits)[10] * 1000:.0f} ms")
        assert max(waits) <= 0.25, waits

        assert abandoned(server.port, "client_gone") == 0
        gone = send(server.port, body, kind)
        time.sleep(0.5)
        gone.close()  # the client hangs up: the images not decoded yet are dropped
        deadline = time.monotonic() + 10
        while abandoned(server.port, "client_gone") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        dropped = abandoned(server.port, "client_gone")
        assert BIG_FILES / 2 < dropped < BIG_FILES, dropped  # most of the 400 were never decoded
        status, reply, seconds = predict_one(server.port, sure_digits[0].png)
        assert status == 200 and seconds < 0.25


def test_sigterm_under_load_answers_json_503s_and_exits_within_the_graceful_timeout(serving_model, sure_digits):
    body, kind = big_multipart(1000)
    with ServerProcess(serving_model, "--no-access-log", "--max-request-pixels", "500000000",
                       "--graceful-timeout", "2") as server:
        big = send(server.port, body, kind)
        outcomes: list[tuple[int, dict]] = []
        stop = threading.Event()

        def small_requests() -> None:
            while not stop.is_set():
                try:
                    status, reply, _ = predict_one(server.port, sure_digits[0].png)
                except OSError:  # no new connections once it stops listening
                    return
                outcomes.append((status, reply))

        clients = [threading.Thread(target=small_requests) for _ in range(4)]
        for client in clients:
            client.start()
        time.sleep(0.5)
        started = time.perf_counter()
        server.process.send_signal(15)
        status, reply = answer(big)
        server.process.wait(10)
        exited = time.perf_counter() - started
        stop.set()
        for client in clients:
            client.join(10)
    print(f"\nSIGTERM with --graceful-timeout 2 under load: exited after {exited:.2f} s, "
          f"{len(outcomes)} one-image answers")
    assert server.process.returncode == 0
    assert exited <= 3.0, exited
    assert status == 503 and "cut off at --graceful-timeout" in reply["error"]
    assert outcomes and all(s == 200 or (s == 503 and "shutting down" in r["error"]) for s, r in outcomes), outcomes
    assert not any("Internal Server Error" in line or "Traceback" in line for line in server.lines), server.lines[-20:]


@pytest.mark.parametrize("side", [1000])
def test_the_budget_counts_the_headers_of_every_part(side):
    from ignite_lenet.serving.classify import Job, Limits, Work
    from ignite_lenet.serving.errors import TooLarge

    body, kind = big_multipart(side, files=5)
    work = Work(Job(body, kind))
    work.open(Limits(max_pixels=side * side, max_request_pixels=4 * side * side))
    assert isinstance(work.outcome, TooLarge) and "5,000,000 pixels" in work.outcome.message
    work = Work(Job(body, kind))
    work.open(Limits(max_pixels=side * side, max_request_pixels=5 * side * side, slice_images=64,
                     slice_pixels=2 * side * side))
    assert work.outcome is None and [len(work.next_slice(Limits(slice_pixels=2 * side * side))) for _ in range(3)] == [
        2, 2, 1]
