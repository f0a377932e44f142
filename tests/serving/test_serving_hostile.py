"""Hostile clients against a real server (``python -m ignite_lenet.serve`` on 127.0.0.1, small limits, a token):
oversized, truncated and stalled bodies, decompression bombs, wrong content types, odd multipart bodies, slow
clients, wrong methods and paths, missing and wrong tokens, malformed HTTP; then schemathesis against the
server's own OpenAPI spec. No answer may be a 500, the server must never stop, and afterwards it still answers
/healthz and classifies a real MNIST digit. The number of hostile requests is printed at the end.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field

import httpx
import pytest
from helpers import ServerProcess, jpeg_with_scans, png_bytes, png_with_chunks
from PIL import Image

TOKEN = "hostile-test-token-0123456789"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"
LIMIT = 1024 * 1024  # --max-body-bytes
TIMEOUT = 1.0  # --body-timeout and --header-timeout, in seconds
TRIED = {"requests": 0}  # replaced by the session's counter (conftest.hostile_count), printed in the summary


@dataclass
class Reply:
    status: int | None  # None: the server closed without answering
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    closed: bool = False  # the server closed the connection after it
    seconds: float = 0.0

    def json_error(self) -> str:
        import json

        assert self.headers.get("content-type") == "application/json", (self.status, self.headers, self.body[:200])
        return json.loads(self.body)["error"]


def _read_reply(sock: socket.socket, started: float, timeout: float, stream=None) -> Reply:
    """The next response on ``sock`` (``stream``: its buffered reader, for several responses on one connection)."""
    sock.settimeout(timeout)
    stream = stream or sock.makefile("rb")
    try:
        status_line = stream.readline(65536)
        if not status_line:
            return Reply(None, closed=True, seconds=time.monotonic() - started)
        headers = {}
        while (line := stream.readline(65536)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = stream.read(int(headers.get("content-length", "0")))
        reply = Reply(int(status_line.split()[1]), headers, body)
        if headers.get("connection") == "close":
            sock.settimeout(2)
            try:
                reply.closed = stream.read(1) == b""
            except ConnectionResetError:  # closed with our unread bytes still in its buffer: a reset
                reply.closed = True
            except TimeoutError:
                reply.closed = False
    except ConnectionResetError:
        return Reply(None, closed=True, seconds=time.monotonic() - started)
    reply.seconds = time.monotonic() - started
    return reply


def exchange(port: int, *chunks: bytes, pause: float = 0.0, timeout: float = 15.0) -> Reply:
    """One hostile request on a fresh connection: send ``chunks`` (``pause`` seconds apart), read the answer."""
    TRIED["requests"] += 1
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for i, chunk in enumerate(chunks):
            if i and pause:
                time.sleep(pause)
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):  # the server gave up on us first: read its answer
                break
        return _read_reply(sock, started, timeout)


def request(method: str, path: str, body: bytes = b"", content_type: str | None = "image/png", auth: bool = True,
            extra: str = "") -> bytes:
    """The bytes of an HTTP/1.1 request (``Connection: close``)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    if auth:
        head += AUTH
    head += f"Content-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode("latin-1") + body


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> tuple[bytes, str]:
    """A multipart/form-data body of ``(field name, file name or None, data)`` parts, and its content type."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` 1-bit pixels (nothing behind it: a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def gif_claiming(width: int, height: int) -> bytes:
    """A one-pixel GIF whose logical screen (the size Pillow reports) claims ``width`` x ``height``."""
    gif = bytearray(png_bytes(Image.new("L", (1, 1)), "GIF"))
    gif[6:10] = struct.pack("<HH", width, height)
    return bytes(gif)


@pytest.fixture(scope="module")
def hostile(serving_model, tmp_path_factory, hostile_count):
    global TRIED
    TRIED = hostile_count
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    args = ["--token-file", str(token_file), "--max-body-bytes", str(LIMIT), "--max-image-pixels", "1000000",
            "--max-files", "64", "--body-timeout", str(TIMEOUT), "--header-timeout", str(TIMEOUT), "--no-access-log"]
    with ServerProcess(serving_model, *args) as server:
        yield server
        assert server.process.poll() is None, "the server stopped:\n" + "\n".join(server.lines[-30:])


def test_oversized_bodies_are_413_before_they_are_read(hostile):
    port = hostile.port
    declared = exchange(port, f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n{AUTH}"
                              f"Content-Length: {10 * LIMIT}\r\n\r\n".encode())
    assert declared.status == 413 and "the limit is 1,048,576 bytes" in declared.json_error() and declared.closed
    chunked = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n{AUTH}"
               f"Transfer-Encoding: chunked\r\n\r\n").encode()
    piece = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
    counted = exchange(port, chunked, *[piece] * 24)  # 1.5 MiB, no Content-Length: counted while read
    assert counted.status == 413 and "over the limit" in counted.json_error() and counted.closed
    early = exchange(port, f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n{AUTH}"
                           f"Expect: 100-continue\r\nContent-Length: {100 * LIMIT}\r\n\r\n".encode())
    assert early.status == 413  # no "100 Continue": the client never sends the 100 MiB
    for path in ("/healthz", "/", "/metrics"):  # a body where none belongs is bounded the same
        assert exchange(port, request("GET", path, b"x" * (LIMIT + 1))).status == 413


def test_truncated_and_stalled_bodies(hostile, sure_digits):
    port, png = hostile.port, sure_digits[0].png
    stalled = exchange(port, request("POST", "/v1/predict", png)[: -len(png) // 2])  # declared more than sent
    assert stalled.status == 408 and "did not arrive within 1 s" in stalled.json_error() and stalled.closed
    assert TIMEOUT <= stalled.seconds < TIMEOUT + 3
    head = request("POST", "/v1/predict", png)[: -len(png)]
    dribbled = exchange(port, head, *[png[i:i + 1] for i in range(len(png))], pause=0.05)  # slower than allowed
    assert dribbled.status == 408
    half = exchange(port, request("POST", "/v1/predict", png[: len(png) // 2]))  # a complete body, half an image
    assert half.status == 400 and "not a readable image" in half.json_error()
    body, kind = multipart([("file", "a.png", png)])
    cut = exchange(port, request("POST", "/v1/predict", body[:-12], kind))  # the closing boundary missing
    assert cut.status == 400 and "truncated multipart body" in cut.json_error()


def test_decompression_bombs_are_413(hostile):
    port = hostile.port
    for bomb in (png_claiming(3000, 3000), png_claiming(100_000, 100_000),  # over ours; over Pillow's own limit
                 png_bytes(Image.new("L", (2000, 2000), 255)),  # 4 megapixels that compress to a few kB
                 gif_claiming(65535, 65535)):
        reply = exchange(port, request("POST", "/v1/predict", bomb))
        assert reply.status == 413 and ("above the limit" in reply.json_error() or "bomb" in reply.json_error())
    body, kind = multipart([("file", "bomb.png", png_claiming(100_000, 100_000)), ("file", "x.gif", b"GIF89a")])
    entries = httpx.Response(200, content=exchange(port, request("POST", "/v1/predict", body, kind)).body).json()
    assert [e["status"] for e in entries["predictions"]] == [413, 400]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json", "application/x-www-form-urlencoded",
                                          "multipart/mixed; boundary=x", "%%%", "image", "x" * 2000])
def test_wrong_and_missing_content_types_are_415(hostile, sure_digits, content_type):
    reply = exchange(hostile.port, request("POST", "/v1/predict", sure_digits[0].png, content_type))
    assert reply.status == 415 and "is not accepted" in reply.json_error() and len(reply.body) < 1000


def test_odd_multipart_bodies(hostile, sure_digits):
    port, png = hostile.port, sure_digits[0].png
    cases = {
        "empty": (b"--b0undary--\r\n", "multipart/form-data; boundary=b0undary"),
        "no boundary": (b"whatever", "multipart/form-data"),
        "not multipart": (b"plain bytes", "multipart/form-data; boundary=b0undary"),
        "fields only": multipart([("comment", None, b"hello"), ("other", None, b"x")]),
        "no name": (b'--b\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\nxx\r\n--b--\r\n',
                    "multipart/form-data; boundary=b"),
        "thousands of files": multipart([("file", f"{i}.png", b"x") for i in range(5000)]),
        "thousands of fields": multipart([(f"f{i}", None, b"x") for i in range(5000)]),
    }
    for name, (body, kind) in cases.items():
        reply = exchange(port, request("POST", "/v1/predict", body, kind))
        assert reply.status == 400, (name, reply)
        assert reply.json_error(), name
    # a 'file' part without a file name, and names that try their luck: each gets its own entry, echoed harmlessly
    names = ["../../etc/passwd", "..\\..\\boot.ini", "名前.png", "a;b=c.png", "%00.png", "<script>.png", "x" * 2000,
             "", " ", "CON", "/dev/null"]
    body, kind = multipart([("file", None, png)] + [("file", n, png) for n in names])
    reply = exchange(port, request("POST", "/v1/predict", body, kind))
    assert reply.status == 200, reply
    entries = httpx.Response(200, content=reply.body).json()["predictions"]
    assert entries[0]["status"] == 400 and "without a filename" in entries[0]["error"]
    assert [e["file"] for e in entries[1:]] == [n[:255] for n in names]
    assert all(e["label"] == sure_digits[0].label for e in entries[1:])
    body, kind = multipart([("file", "y" * 500_000, png)])  # a half-megabyte part header: echoed cut to 255
    long_name = exchange(port, request("POST", "/v1/predict", body, kind))
    assert long_name.status == 200 and f'"file":"{"y" * 255}"'.encode() in long_name.body


def test_slow_and_idle_clients_are_cut_off(hostile):
    port = hostile.port
    trickle = [b"POST /v1/predict HTTP/1.1\r\n"] + [b"X-Slow: %d\r\n" % i for i in range(40)]
    slowloris = exchange(port, *trickle, pause=0.1)  # headers a line every 0.1 s: never complete in time
    assert slowloris.status == 408 and slowloris.seconds < TIMEOUT + 3
    TRIED["requests"] += 1
    with socket.create_connection(("127.0.0.1", port)) as idle:  # connects, says nothing
        reply = _read_reply(idle, time.monotonic(), 10)
    assert reply.status == 408 and reply.seconds < TIMEOUT + 3
    huge = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Big: " + b"y" * 100_000 + b"\r\n")
    assert huge.status == 431 and huge.closed
    many = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]  # 200 idle connections at once
    TRIED["requests"] += len(many)
    try:
        assert httpx.get(hostile.url + "/healthz").status_code == 200
    finally:
        for sock in many:
            sock.close()


@pytest.mark.parametrize("raw", [
    request("GET", "/v1/predict"), request("PUT", "/healthz"), request("DELETE", "/"), request("PATCH", "/metrics"),
    request("OPTIONS", "/v1/predict"), request("HEAD", "/openapi.json"), request("BREW", "/healthz"),
    request("GET", "/../../etc/passwd"), request("GET", "/%2e%2e/%2e%2e/etc/passwd"), request("GET", "/v1//predict"),
    request("GET", "/%00"), request("GET", "/" + "a" * 8000), request("POST", "/v1/predict/"),
    request("GET", "/openapi.json?x=<script>alert(1)</script>"), request("GET", "/healthz?" + "&".join(["a=1"] * 2000)),
    b"HELLO\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(200)),  # junk, a TLS hello
    b"GET /\r\n\r\n", b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello",
    b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad\x00Header: 1\r\n\r\n",
], ids=lambda raw: re.sub(r"[^A-Za-z0-9/%.?=-]", "_", raw[:40].decode("latin-1")))
def test_wrong_methods_paths_and_malformed_http_are_never_500(hostile, raw):
    reply = exchange(hostile.port, raw)
    assert reply.status is None or reply.status < 500, reply  # an answer, or a closed door; never a 500


def test_no_wrong_or_misplaced_token_is_401(hostile, sure_digits):
    port, png = hostile.port, sure_digits[0].png
    for extra in ("", "Authorization: Bearer wrong\r\n", "Authorization: Bearer\r\n", f"Authorization: Basic {TOKEN}\r\n",
                  f"Authorization: Bearer {TOKEN}x\r\n", f"Authorization: Bearer {TOKEN[:-1]}\r\n",
                  f"Authorization: Bearer {'t' * 20_000}\r\n", f"X-Token: {TOKEN}\r\n", "Authorization: Bearer é\r\n"):
        reply = exchange(port, request("POST", "/v1/predict", png, auth=False, extra=extra))
        assert reply.status == 401 and "token" in reply.json_error(), extra
        assert reply.headers["www-authenticate"].startswith("Bearer")
    query = exchange(port, request("POST", f"/v1/predict?token={TOKEN}", png, auth=False))
    assert query.status == 401
    lower = exchange(port, request("POST", "/v1/predict", png, auth=False, extra=f"authorization: bearer {TOKEN}\r\n"))
    assert lower.status == 200  # header names and the scheme are case-insensitive
    assert exchange(port, request("GET", "/healthz", auth=False)).status == 200  # open for probes


def test_pipelined_requests_are_answered_in_order(hostile, sure_digits):
    first = request("POST", "/v1/predict", sure_digits[0].png).replace(b"Connection: close\r\n", b"")
    TRIED["requests"] += 2
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=15) as sock:
        sock.sendall(first + request("GET", "/healthz"))  # two requests in one write
        stream = sock.makefile("rb")
        one = _read_reply(sock, time.monotonic(), 15, stream)
        two = _read_reply(sock, time.monotonic(), 15, stream)
    assert one.status == 200 and f'"label":{sure_digits[0].label}'.encode() in one.body
    assert two.status == 200 and b'"status": "ok"' in two.body


def test_schemathesis_against_the_servers_own_openapi(hostile):
    """Property-based requests from /openapi.json (positive and negative data): no 500, every answer conforms."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                                   response_schema_conformance, status_code_conformance)

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              response_headers_conformance]
    schema = schemathesis.openapi.from_url(hostile.url + "/openapi.json")
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=60, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            def run(case) -> None:
                TRIED["requests"] += 1
                TRIED["schemathesis"] = TRIED.get("schemathesis", 0) + 1
                response = case.call_and_validate(base_url=hostile.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                                  checks=checks, timeout=15)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

            try:
                run()
            except Unsatisfiable:  # no invalid request exists for an operation without parameters or body
                assert mode is GenerationMode.NEGATIVE
    assert 500 not in statuses and sum(statuses.values()) >= 60, statuses


def ico_holding(width: int, height: int, claimed: int = 16) -> bytes:
    """An ICO whose directory claims ``claimed`` x ``claimed`` but whose one entry is a ``width`` x ``height`` PNG."""
    png = png_bytes(Image.new("1", (width, height)))
    entry = struct.pack("<BBBBHHII", claimed, claimed, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


def test_only_the_formats_we_mean_to_read_are_opened(hostile):
    ico = ico_holding(6000, 6000)  # 36 megapixels behind a 16x16 claim
    started = time.monotonic()
    reply = exchange(hostile.port, request("POST", "/v1/predict", ico, "image/x-icon"))
    assert reply.status == 400 and "not one of PNG, JPEG, GIF, BMP, TIFF, WEBP, PPM" in reply.json_error()
    assert reply.seconds < 0.5 and time.monotonic() - started < 0.5  # nothing decoded (it took 0.4 s and 140 MB)
    body, kind = multipart([("file", f"{i}.ico", ico) for i in range(29)])
    assert exchange(hostile.port, request("POST", "/v1/predict", body, kind)).status == 200  # each refused alone


def test_images_cheap_to_send_and_slow_to_read_are_refused_before_decoding(hostile):
    """A JPEG of thousands of scans, a PNG of thousands of empty chunks: 413 naming the limit."""
    from ignite_lenet.mnist.digits import MAX_JPEG_SCANS

    bomb = jpeg_with_scans(Image.new("L", (1000, 1000)), 10_000)  # 146 KB: ~6 s of libjpeg before the limit
    reply = exchange(hostile.port, request("POST", "/v1/predict", bomb, "image/jpeg"))
    assert reply.status == 413, reply
    assert f"a JPEG of 10,006 scans is above the limit of {MAX_JPEG_SCANS}" in reply.json_error()
    flood = png_with_chunks(png_bytes(Image.new("L", (28, 28))), 80_000)  # 960 KB of empty chunks, 784 pixels
    reply = exchange(hostile.port, request("POST", "/v1/predict", flood, "image/png"))
    assert reply.status == 413 and "a PNG of 960,0" in reply.json_error() and "for 28x28 pixels" in reply.json_error()
    body, kind = multipart([("file", f"{i}.jpg", bomb) for i in range(6)])  # under --max-body-bytes: each refused
    reply = exchange(hostile.port, request("POST", "/v1/predict", body, kind))
    assert reply.status == 200 and {p["status"] for p in json.loads(reply.body)["predictions"]} == {413}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_header_bytes_pipelined_while_a_request_is_answered_are_bounded(serving_model):
    """A request in flight, then megabytes of header lines for the next one: the server stops reading them."""
    files = [("file", f"{i}.png", png_bytes(Image.new("1", (1000, 1000)))) for i in range(300)]
    body, kind = multipart(files)  # 300 megapixels: seconds of decoding, while we pipeline
    first = request("POST", "/v1/predict", body, kind, auth=False).replace(b"Connection: close\r\n", b"")
    line = b"X-Pad: " + b"p" * 1000 + b"\r\n"
    with ServerProcess(serving_model, "--no-access-log", "--max-request-pixels", "400000000") as server:
        before = rss_kib(server.process.pid)
        sent = 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(first + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sock.settimeout(0.5)
            deadline = time.monotonic() + 2
            try:
                while time.monotonic() < deadline and sent < 300 * 1024 * 1024:
                    sock.sendall(line * 64)
                    sent += len(line) * 64
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                pass  # the server stopped reading: our send blocks
            grown = rss_kib(server.process.pid) - before
            answers = b""
            sock.settimeout(30)
            try:
                while chunk := sock.recv(1 << 16):
                    answers += chunk
            except (TimeoutError, ConnectionResetError):
                pass
    print(f"\npipelined while a request was answered: {sent / 2**20:.1f} MiB taken, the worker grew {grown:,} KiB")
    # what it does not read it cannot buffer: a few MiB of socket buffers (5d05f7c read 900 MiB in those 2 s and
    # grew by 3 GB; its RSS is not asserted here, since decoding 300 megapixels moves it by hundreds of MB itself)
    assert sent < 32 * 1024 * 1024, sent
    assert answers.startswith(b"HTTP/1.1 200 ")
    assert b"431 Request Header Fields Too Large" in answers  # the pipelined request's headers, refused once read


def test_413_without_expect_reaches_a_client_that_sends_the_whole_body(hostile):
    """Python's http.client sends all of the body before it reads: the 413 must not be lost to a reset."""
    for size in (2 * LIMIT, 10 * LIMIT):
        TRIED["requests"] += 1
        connection = http.client.HTTPConnection("127.0.0.1", hostile.port, timeout=10)
        connection.request("POST", "/v1/predict", b"\0" * size, {"Content-Type": "image/png",
                                                                  "Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        assert response.status == 413 and "the limit is 1,048,576 bytes" in json.loads(response.read())["error"]
        connection.close()


def test_hosts_other_than_the_servers_own_are_refused(hostile):
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil", ""):
        reply = exchange(hostile.port, request("GET", "/healthz").replace(b"Host: 127.0.0.1", b"Host: " + host.encode()))
        assert reply.status == 400 and "--allowed-host" in reply.json_error(), host
    for host in (f"127.0.0.1:{hostile.port}", f"localhost:{hostile.port}", "LOCALHOST", f"[::1]:{hostile.port}"):
        reply = exchange(hostile.port, request("GET", "/healthz").replace(b"Host: 127.0.0.1", b"Host: " + host.encode()))
        assert reply.status == 200, host


def test_healthz_without_the_token_says_only_its_status(hostile):
    assert json.loads(exchange(hostile.port, request("GET", "/healthz", auth=False)).body) == {"status": "ok"}
    full = json.loads(exchange(hostile.port, request("GET", "/healthz")).body)
    assert full["status"] == "ok" and full["pid"] == hostile.process.pid and full["model"].endswith(".onnx")
    assert json.loads(exchange(hostile.port, request("GET", "/readyz", auth=False)).body) == {"status": "ready"}
    warnings = [line for line in hostile.lines if "--token-file" in line and "readable" in line]
    assert warnings and "chmod 600" in warnings[0]  # the fixture's token file is 0644


def test_after_all_of_it_the_server_is_healthy_and_right(hostile, sure_digits):
    """Runs last in this module (pytest keeps file order)."""
    assert httpx.get(hostile.url + "/healthz").json()["status"] == "ok"
    for digit in sure_digits:
        answer = httpx.post(hostile.url + "/v1/predict", content=digit.png,
                            headers={"Content-Type": "image/png", "Authorization": f"Bearer {TOKEN}"})
        assert answer.json()["predictions"][0]["label"] == digit.label
    metrics = httpx.get(hostile.url + "/metrics").text
    assert 'status="500"' not in metrics, [line for line in metrics.splitlines() if 'status="500"' in line]
    assert TRIED["requests"] > 150
