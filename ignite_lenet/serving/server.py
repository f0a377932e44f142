"""Running the app under uvicorn (``uvicorn.Config`` / ``Server``, its ``Multiprocess`` supervisor for workers).

``serve(settings)`` loads and checks the model and the token first (a bad one is a one-line error before anything
listens), binds the socket itself (a port in use is one line too), then hands over to uvicorn: its limits
(``limit_concurrency``, ``timeout_keep_alive``), its graceful shutdown (SIGTERM: stop accepting, let in-flight
requests finish within ``--graceful-timeout``, exit) and, with ``--workers N``, N processes sharing the socket.
Headers and bodies that trickle in (slowloris) are cut off by ``TimedHttpToolsProtocol``; bodies too large by
``middleware.BodyLimits``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from ignite_lenet.serving.app import create_app, freeze_startup_objects, load_model
from ignite_lenet.serving.metrics import MULTIPROC_ENV
from ignite_lenet.serving.settings import Settings, read_token

try:  # uvicorn's C-parser protocol, what "auto" picks when httptools is installed (the serving extra has it)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - without httptools: the pure-Python h11 protocol, no header timeout
    HttpToolsProtocol = None

WORKER_APP = "ignite_lenet.serving.app:app_from_environment"


class ServerConfig(uvicorn.Config):
    """``uvicorn.Config`` plus the header and body timeouts its protocol reads (the config travels to workers)."""

    def __init__(self, app: Any, header_timeout: float, body_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout, self.body_timeout = header_timeout, body_timeout


MAX_HEADER_BYTES = 64 * 1024  # request line and headers of one request (httptools itself sets no bound)


def _refusal(status: bytes, message: str) -> bytes:
    body = ('{"error":"%s"}' % message).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


if HttpToolsProtocol is not None:

    class TimedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with bounds on slow and large requests, enforced per connection:

        - the request line and headers must arrive within ``header_timeout`` of the connection's opening or of its
          previous response (uvicorn's keep-alive timer stops at the first byte, so a client sending a byte now and
          then would hold the connection forever: slowloris), and be at most ``MAX_HEADER_BYTES`` (the parser would
          buffer any amount);
        - the body must arrive within ``body_timeout`` of the headers, whether the app reads it or not.

        Beyond any of them: 408 or 431 (while no response has started), then the connection is closed. One timer per
        request, so the app's reads of the body need no timeout of their own.
        """

        def __init__(self, config: ServerConfig, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            self.header_timeout = getattr(config, "header_timeout", Settings.header_timeout)
            self.body_timeout = getattr(config, "body_timeout", Settings.body_timeout)
            self.header_timer: Any = None
            self.body_timer: Any = None
            self.header_bytes = -1  # -1: not waiting for headers (a request is being answered)

        def _await_headers(self) -> None:
            self._headers_done()
            self.header_bytes = 0
            self.header_timer = self.loop.call_later(self.header_timeout, self._refuse, b"408 Request Timeout",
                                                     "the request headers did not arrive in time")

        def _headers_done(self) -> None:
            self.header_bytes = -1
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _refuse(self, status: bytes, message: str) -> None:
            self._headers_done()
            self._body_done()
            if not self.transport.is_closing():
                if self.cycle is None or not self.cycle.response_started:
                    self.transport.write(_refusal(status, message))
                self.transport.close()

        def _body_done(self) -> None:
            if self.body_timer is not None:
                self.body_timer.cancel()
                self.body_timer = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._await_headers()

        def data_received(self, data: bytes) -> None:
            waiting = self.header_bytes >= 0
            if waiting:
                self.header_bytes += len(data)
            super().data_received(data)
            # still waiting after the parser took it all in: the headers alone are this long (a chunk that also
            # held the end of the headers and the start of a body has completed them and does not count)
            if waiting and self.header_bytes > MAX_HEADER_BYTES:
                self._refuse(b"431 Request Header Fields Too Large",
                             f"the request line and headers are over {MAX_HEADER_BYTES:,} bytes")

        def on_headers_complete(self) -> None:
            self._headers_done()
            super().on_headers_complete()
            # cancelled by on_message_complete, at once for a request without a body
            self.body_timer = self.loop.call_later(self.body_timeout, self._refuse, b"408 Request Timeout",
                                                   f"the request body did not arrive within {self.body_timeout:g} s")

        def on_message_complete(self) -> None:
            self._body_done()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)  # the next request's headers are in already
            super().on_response_complete()
            if not pipelined and not self.transport.is_closing():
                self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._headers_done()
            self._body_done()
            super().connection_lost(exc)


def uvicorn_config(settings: Settings, app: Any) -> ServerConfig:
    """The uvicorn configuration of ``settings`` for ``app`` (an app, or the workers' import string)."""
    return ServerConfig(
        app,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        factory=isinstance(app, str),
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        http=TimedHttpToolsProtocol if HttpToolsProtocol is not None else "auto",
        ws="none",
        lifespan="on",
        loop="auto",  # uvloop when installed
        timeout_keep_alive=settings.keep_alive,
        timeout_graceful_shutdown=settings.graceful_timeout,
        limit_concurrency=settings.max_connections,
        access_log=settings.access_log,
        log_level=settings.log_level,
        proxy_headers=False,  # no proxy is trusted unless one is configured in front
        server_header=False,
    )


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening-ready socket bound to ``host:port`` (``OSError`` naming both in one line); ``reuse_port``: one of
    several sockets on the same port, between which the kernel spreads new connections (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    except (UnicodeError, ValueError) as e:  # a host name that is no name
        sock.close()
        raise ValueError(f"--host {host}: {e}") from None
    sock.set_inheritable(True)
    return sock


def _exit_quietly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def serve(settings: Settings, announce: Any = print) -> int:
    """Serve until SIGTERM or Ctrl-C; ``ValueError``/``OSError`` (one line) for a bad model, token or address."""
    settings = settings.with_absolute_paths()
    classifier = load_model(settings)  # the checks of OnnxClassifier, once, before anything listens
    if settings.token_file:
        read_token(settings.token_file)
    reuse_port = settings.workers > 1 and hasattr(socket, "SO_REUSEPORT")
    sock = bind(settings.host, settings.port, reuse_port)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    announce(f"serving {settings.model} on http://{shown_host}:{port} with {settings.workers} worker"
             f"{'s' if settings.workers > 1 else ''} (SIGTERM or Ctrl-C to stop)", flush=True)
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully; that ends the command with exit 0
    previous = signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        if settings.workers == 1:
            server = uvicorn.Server(uvicorn_config(settings, create_app(settings, classifier)))
            freeze_startup_objects()
            server.run(sockets=[sock])
            return 0 if server.started else 1
        del classifier  # each worker loads its own
        # a socket per worker where the system has SO_REUSEPORT (bound to the port the first one got)
        sockets = [sock] + [bind(settings.host, port, reuse_port) for _ in range(settings.workers - 1)
                            if reuse_port]
        try:
            return _serve_workers(settings, sockets)
        finally:
            for extra in sockets[1:]:
                extra.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()


class _Supervisor(Multiprocess):
    """uvicorn's supervisor (restarts dead workers, SIGTERM to all, joins), each worker started on its own socket.

    With one shared listening socket, whichever worker wakes first accepts a whole burst of connections: 32
    keep-alive clients opening at once often all landed on one of two workers (the load benchmark saw half the
    throughput in such runs). ``SO_REUSEPORT`` sockets let the kernel spread connections by their address. A
    replacement for a dead worker listens on every socket, so no socket is left without a worker.
    """

    def init_processes(self) -> None:
        if len(self.sockets) != self.processes_num:
            super().init_processes()
            return
        for sock in self.sockets:
            process = Process(self.config, [sock])
            process.start()
            self.processes.append(process)


def _serve_workers(settings: Settings, sockets: list[socket.socket]) -> int:
    """``settings.workers`` processes under uvicorn's supervisor, metrics shared through a private directory."""
    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_dir = tempfile.mkdtemp(prefix="ignite_lenet-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir
    os.environ.update(settings.to_environment())
    try:
        _Supervisor(uvicorn_config(settings, WORKER_APP), sockets=sockets).run()
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
    return 0
