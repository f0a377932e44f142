"""``Settings``: everything that defines a running service, the one home of its defaults and limits.

The command line (``python -m ignite_lenet.serve``) is generated from these fields (help, default and range
written once, here); ``create_app(settings)`` and the uvicorn configuration read them. Workers of a
``--workers N`` server get them through the environment (``to_environment``/``from_environment``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import stat
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ignite_lenet.cmdline import check_fields, option
from ignite_lenet.inference.onnx_runtime import MAX_THREADS
from ignite_lenet.mnist.digits import MAX_IMAGE_PIXELS
from ignite_lenet.spec import DEFAULT_MODEL

SETTINGS_ENV = "IGNITE_LENET_SERVE_SETTINGS"  # JSON of the settings, for worker processes
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
MiB = 1024 * 1024
MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # a name that is one URL path segment as it is


@dataclass(frozen=True)
class Settings:
    """The service's configuration; invalid values raise ``ValueError`` naming the flag."""

    model: str = option(DEFAULT_MODEL, "the exported ONNX model to serve (lenet5.onnx or lenet5.raw.onnx), or a "
                        "directory holding one", metavar="PATH")
    host: str = option("127.0.0.1", "address to listen on: loopback only by default; 0.0.0.0 (or an interface's "
                       "address) serves other machines", metavar="ADDRESS")
    port: int = option(8000, "TCP port (0: any free port, printed at start)", range=(0, 65535))
    workers: int = option(1, "server processes sharing the port, each with its own copy of the model; /metrics "
                          "adds up all of them", range=(1, 64))
    token_file: str | None = option(None, "file whose first line is a bearer token: /v1/* then requires "
                                    "'Authorization: Bearer TOKEN' (/healthz, /metrics and the page stay open; the "
                                    "page cannot send the token)", metavar="FILE")
    max_body_bytes: int = option(4 * MiB, "largest request body in bytes, enforced while it is read (413 beyond)",
                                 range=(1024, 1024 * MiB))
    max_image_pixels: int = option(4_000_000, "largest image in pixels, checked before decoding (413 beyond: "
                                   "decompression bombs)", range=(64, MAX_IMAGE_PIXELS))
    max_files: int = option(1024, "most images in one multipart request", range=(1, 100_000))
    max_request_pixels: int = option(16_000_000, "most pixels in all the images of one request, counted from their "
                                     "headers before any is decoded (413 beyond: thousands of small files that each "
                                     "decode to a large image)", range=(64, 4_000_000_000))
    max_queued_images: int = option(8192, "images waiting to be decoded at most, per worker (503 beyond: "
                                    "backpressure); /readyz turns 503 at half of it", range=(1, 10_000_000))
    body_timeout: float = option(30.0, "seconds a request's whole body may take to arrive after its headers (408 "
                                 "and the connection closed beyond: slow clients)", range=(0.01, 3600.0))
    header_timeout: float = option(10.0, "seconds a connection may take to send a request's headers, from its "
                                   "start or its previous response (slowloris)", range=(0.01, 3600.0))
    keep_alive: int = option(5, "seconds an idle keep-alive connection stays open (uvicorn's timeout_keep_alive)",
                             range=(1, 3600))
    graceful_timeout: int = option(30, "seconds in-flight requests get to finish after SIGTERM before they are "
                                   "cancelled", range=(0, 3600))
    max_connections: int = option(1024, "concurrent connections and requests per worker beyond which requests get "
                                  "503 (uvicorn's limit_concurrency)", range=(1, 1_000_000))
    inference_threads: int = option(1, "batches classified at once per worker, each on a thread off the event "
                                    "loop (decoding, preprocessing, ONNX Runtime, JSON); requests that arrive "
                                    "meanwhile form the next batch", range=(1, 256))
    onnx_threads: int = option(1, "ONNX Runtime intra-op threads per batch (1 leaves the other cores to the event "
                               "loop and the other workers)", range=(1, MAX_THREADS))
    access_log: bool = option(True, "log every request on stdout (uvicorn's access log)",
                              flag="--access-log/--no-access-log")
    log_level: str = option("info", "uvicorn's log level", choices=LOG_LEVELS)
    allowed_host: str | None = option(None, "host names the Host header may carry, comma-separated ('*': any); "
                                      "default: the loopback names (localhost, 127.0.0.1, ::1) when --host is a "
                                      "loopback address, any otherwise. Others get 400: a DNS-rebinding page cannot "
                                      "read a loopback server", metavar="HOST[,HOST...]")
    model_name: str | None = option(None, "the model's name in the Open Inference Protocol routes, /v2/models/NAME "
                                    "(default: the export's: lenet5 for lenet5.onnx, lenet5.raw for lenet5.raw.onnx, "
                                    "the model directory's name in a Triton model repository)", metavar="NAME")

    def __post_init__(self) -> None:
        check_fields(self)  # every field against its annotation, range and choices
        if not self.host.strip():
            raise ValueError(f"--host must be an address, got {self.host!r}")
        if self.allowed_host is not None and not all(_host_pattern(h) for h in self.allowed_host.split(",")):
            raise ValueError(f"--allowed-host must be host names separated by commas, or '*', got "
                             f"{self.allowed_host[:80]!r}")
        if self.model_name is not None and not MODEL_NAME.fullmatch(str(self.model_name)):
            raise ValueError(f"--model-name must be 1 to 100 letters, digits, '.', '_' or '-', got {self.model_name!r}")

    def allowed_hosts(self) -> frozenset[str] | None:
        """The Host names ``--allowed-host`` accepts (lower case, no port, no brackets), or None for any."""
        if self.allowed_host is None:
            return None
        names = frozenset(h.strip().lower().strip("[]") for h in self.allowed_host.split(","))
        return None if "*" in names else names

    def for_server(self) -> Settings:
        """What a server process runs: model and token paths absolute (workers may start elsewhere), and
        ``--allowed-host`` defaulted to the loopback names when listening on a loopback address. (An app that
        ``create_app`` makes for another ASGI server checks only an explicit ``allowed_host``.)"""
        token = None if self.token_file is None else str(Path(self.token_file).absolute())
        hosts = self.allowed_host
        if hosts is None and is_loopback(self.host):
            hosts = ",".join(sorted(LOOPBACK_NAMES))
        return dataclasses.replace(self, model=str(Path(self.model).absolute()), token_file=token, allowed_host=hosts)

    def to_environment(self) -> dict[str, str]:
        """``{SETTINGS_ENV: json}``, for ``from_environment`` in a worker process."""
        return {SETTINGS_ENV: json.dumps(dataclasses.asdict(self))}

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        if SETTINGS_ENV not in environ:
            raise ValueError(f"${SETTINGS_ENV} is not set: start the server with python -m ignite_lenet.serve")
        values: dict[str, Any] = json.loads(environ[SETTINGS_ENV])
        return cls(**values)


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is a loopback one (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def _host_pattern(name: str) -> bool:
    name = name.strip().strip("[]")
    return name == "*" or (0 < len(name) <= 253 and all(c.isalnum() or c in "-.:_" for c in name))


def token_file_warning(path: str | Path) -> str | None:
    """A warning when the token file can be read by users other than its owner (``chmod 600`` it)."""
    mode = Path(path).stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return (f"warning: --token-file {path} is readable by {'group and others' if mode & stat.S_IROTH else 'its group'} "
                f"(mode {stat.S_IMODE(mode):04o}); chmod 600 {path}")
    return None


def read_token(path: str | Path) -> bytes:
    """The bearer token: the first line of ``path``, stripped; ``ValueError`` when it is empty or unprintable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--token-file {path}: not UTF-8 text") from None
    except OSError as e:
        raise OSError(f"--token-file {path}: {e.strerror or e}") from None
    token = text.splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ValueError(f"--token-file {path}: the file is empty; put the token on its first line")
    if not token.isprintable() or not token.isascii() or " " in token:
        raise ValueError(f"--token-file {path}: the token must be printable ASCII without spaces (as a header carries it)")
    return token.encode("ascii")
