"""Running the app under uvicorn (``uvicorn.Config`` / ``Server``, its ``Multiprocess`` supervisor for workers).

``serve(settings)`` loads and checks the model and the token first (a bad one is a one-line error before anything
listens), binds the socket itself (a port in use is one line too), then hands over to uvicorn: its limits
(``limit_concurrency``, ``timeout_keep_alive``), its graceful shutdown (SIGTERM: stop accepting, let in-flight
requests finish within ``--graceful-timeout``, exit) and, with ``--workers N``, N processes sharing the socket.
Headers and bodies that trickle in (slowloris) are cut off by ``TimedHttpToolsProtocol``; bodies too large by
``middleware.BodyLimits``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess, multiprocess
from uvicorn.supervisors.multiprocess import Process

from ignite_lenet.serving.app import BEGIN_SHUTDOWN, create_app, freeze_startup_objects, load_model
from ignite_lenet.serving.metrics import MULTIPROC_ENV
from ignite_lenet.serving.settings import Settings, read_token, token_file_warning

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


# After a response that left its request's body unread (a 413 on the Content-Length, a 401 before the body), the
# rest is read and dropped, at most this much for at most this long, with the write side shut: closing at once with
# unread bytes makes the kernel send a reset, and a client still sending (one without "Expect: 100-continue",
# which is most) would lose the answer. nginx calls it a lingering close.
LINGER_BYTES = 64 * 1024 * 1024
LINGER_SECONDS = 2.0


if HttpToolsProtocol is not None:

    class TimedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with bounds on slow and large requests, enforced per connection:

        - the request line and headers must arrive within ``header_timeout`` of the connection's opening or of its
          previous response (uvicorn's keep-alive timer stops at the first byte, so a client sending a byte now and
          then would hold the connection forever: slowloris), and be at most ``MAX_HEADER_BYTES`` (the parser would
          buffer any amount);
        - bytes that arrive while a request is answered (pipelined: the next requests) are read up to
          ``MAX_HEADER_BYTES``, then reading pauses until the response is sent, and they count towards the next
          request's header bytes: what the parser buffers is bounded at every moment, in flight or idle;
        - the body must arrive within ``body_timeout`` of the headers, whether the app reads it or not;
        - a response sent before its request's body was read is followed by a lingering close (``LINGER_*``).

        Beyond any of them: 408 or 431 (while no response has started), then the connection is closed. One timer per
        request, so the app's reads of the body need no timeout of their own.
        """

        def __init__(self, config: ServerConfig, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            self.header_timeout = config.header_timeout
            self.body_timeout = config.body_timeout
            self.header_timer: Any = None
            self.body_timer: Any = None
            self.header_bytes = -1  # -1: not waiting for headers (a request is being answered)
            self.pipelined_bytes = -1  # -1: no request received whole and still unanswered
            self.body_complete = True
            self.lingering = -1  # bytes dropped since a lingering close began; -1: not lingering

        def _await_headers(self, already: int = 0) -> None:
            self._headers_done()
            self.header_bytes = already
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
                cycle = self.cycle  # the previous request's, on a keep-alive connection
                if cycle is None or not cycle.response_started or cycle.response_complete:
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
            if self.lingering >= 0:
                self.lingering += len(data)
                if self.lingering > LINGER_BYTES:
                    self.transport.close()
                return
            waiting = self.header_bytes >= 0
            if waiting:
                self.header_bytes += len(data)
            elif self.pipelined_bytes >= 0:
                self.pipelined_bytes += len(data)
            super().data_received(data)
            # still waiting after the parser took it all in: the headers alone are this long (a chunk that also
            # held the end of the headers and the start of a body has completed them and does not count)
            if waiting and self.header_bytes > MAX_HEADER_BYTES:
                self._refuse(b"431 Request Header Fields Too Large",
                             f"the request line and headers are over {MAX_HEADER_BYTES:,} bytes")
            elif self.pipelined_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                self.flow.pause_reading()  # resumed when the response is sent (or by the app's next receive)

        def on_headers_complete(self) -> None:
            self._headers_done()
            self.pipelined_bytes = -1
            self.body_complete = False
            super().on_headers_complete()
            if self.cycle is not None:
                self.cycle.transport = _CycleTransport(self)  # its close() after a response lingers if need be
            # cancelled by on_message_complete, at once for a request without a body
            self.body_timer = self.loop.call_later(self.body_timeout, self._refuse, b"408 Request Timeout",
                                                   f"the request body did not arrive within {self.body_timeout:g} s")

        def on_message_complete(self) -> None:
            self._body_done()
            self.body_complete = True
            super().on_message_complete()
            if self.cycle is not None and not self.cycle.response_complete:
                self.pipelined_bytes = 0  # whatever comes now is the next request's, read while this one is answered

        def close_after_response(self) -> None:
            """The cycle closing the connection (``Connection: close``): at once, or lingering when its request's
            body was not all read."""
            if self.body_complete or self.transport.is_closing():
                self.transport.close()
            else:
                self._linger()

        def on_response_complete(self) -> None:
            if self.lingering >= 0:
                return
            pipelined = bool(self.pipeline)  # the next request's headers are in already
            carried = max(self.pipelined_bytes, 0)
            self.pipelined_bytes = -1
            if not self.body_complete and not self.transport.is_closing():
                self._linger()
                return
            super().on_response_complete()
            if not pipelined and not self.transport.is_closing():
                self._await_headers(carried)

        def _linger(self) -> None:
            """Drop the rest of the body with the write side shut, then close (``LINGER_*``)."""
            if self.lingering >= 0:
                return
            self._headers_done()
            self._body_done()
            self.lingering = 0
            self.flow.resume_reading()
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

        def connection_lost(self, exc: Exception | None) -> None:
            self._headers_done()
            self._body_done()
            super().connection_lost(exc)


class _CycleTransport:
    """The connection's transport as one request's cycle sees it: ``close`` is the protocol's
    ``close_after_response``; everything else is the transport's."""

    def __init__(self, protocol: Any) -> None:
        self._protocol, self._transport = protocol, protocol.transport
        self.write, self.is_closing = self._transport.write, self._transport.is_closing

    def close(self) -> None:
        self._protocol.close_after_response()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


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


class ServingServer(uvicorn.Server):
    """``uvicorn.Server`` that tells the app a graceful shutdown has begun (the ``BEGIN_SHUTDOWN`` callable of the
    app's lifespan state), before it waits for the requests in flight: what waits is answered 503 at once, what
    runs by ``--graceful-timeout``, not cancelled into uvicorn's plain-text 500 at the end of it."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        begin = getattr(self, "lifespan", None) and self.lifespan.state.get(BEGIN_SHUTDOWN)
        if begin is not None:
            begin()
        await super().shutdown(sockets)


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
    settings = settings.for_server()
    classifier = load_model(settings)  # the checks of OnnxClassifier, once, before anything listens
    if settings.token_file:
        read_token(settings.token_file)
        warning = token_file_warning(settings.token_file)
        if warning:
            announce(warning, flush=True)
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
            server = ServingServer(uvicorn_config(settings, create_app(settings, classifier)))
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
        sockets = self.sockets if len(self.sockets) == self.processes_num else [None] * self.processes_num
        for sock in sockets:
            process = WorkerProcess(self.config, self.sockets if sock is None else [sock])
            process.start()
            self.processes.append(process)


class WorkerProcess(Process):
    """uvicorn's worker process, running a ``ServingServer``."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = ServingServer(config=self.config)
        return self._server


@contextlib.contextmanager
def _worker_processes() -> Iterator[None]:
    """uvicorn's supervisor starting ``WorkerProcess``es wherever it starts one (a dead worker's replacement,
    SIGHUP, SIGTTIN): it names its ``Process`` class in four places, so the name is bound to ours while our
    supervisor runs (in the command's own process), rather than four methods copied from uvicorn."""
    original = multiprocess.Process
    multiprocess.Process = WorkerProcess
    try:
        yield
    finally:
        multiprocess.Process = original


def _serve_workers(settings: Settings, sockets: list[socket.socket]) -> int:
    """``settings.workers`` processes under uvicorn's supervisor, metrics shared through a private directory."""
    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_dir = tempfile.mkdtemp(prefix="ignite_lenet-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir
    os.environ.update(settings.to_environment())
    try:
        with _worker_processes():
            _Supervisor(uvicorn_config(settings, WORKER_APP), sockets=sockets).run()
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
    return 0
