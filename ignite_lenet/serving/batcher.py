"""Fair dynamic batching: every request waiting gets one slice of its images into the next batch, and a batch is
one hop to a worker thread with one ONNX Runtime call for all of it.

One thread hop per request cost more than the model (a GIL handover and two wake-ups each way, ~150 us of CPU
against ~40 us for ONNX Runtime on one digit), and ONNX Runtime's fixed cost per call dominates at batch 1. So
while a batch is on the worker thread, new requests gather and join the next batch: no timer, no added wait when
the server is idle (a lone request is a batch of one), and under load the hop and the model call are shared.
A batch of a few small single images (``INLINE_PIXELS``, ``INLINE_BYTES``) skips the hop: it is decoded and
classified on the event loop, in well under a millisecond; anything bigger goes to the thread.

Fairness: a batch takes at most one *slice* of each request (``classify.Limits``: a bounded number of images and
pixels), round robin, so a request of a thousand expensive images is decoded a slice per batch while a one-image
request that arrives meanwhile waits for one batch at most, not for the thousand. A request whose client hung up
is dropped at its next image. On shutdown, what has not started is answered 503 at once; what is in progress gets
until the graceful deadline, then is answered 503 too (``begin_shutdown``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ignite_lenet.inference.classifier import Classifier
from ignite_lenet.serving.classify import Job, Limits, Result, Work, close, run_batch
from ignite_lenet.serving.errors import ClientGone, Unavailable

SHUTTING_DOWN = "the server is shutting down; retry on another instance"
# A batch of a few small single images is decoded and classified on the event loop: ~60 us per MNIST-sized digit,
# less than the thread hop and wake-ups it saves. Bounded so the loop never stalls: at most INLINE_PIXELS in all
# (~20 digits, ~1 ms), each body at most INLINE_BYTES (its header is read on the loop to count its pixels, and a
# small body bounds what that read can decompress).
INLINE_PIXELS = 16_384
INLINE_BYTES = 2048
CUT_OFF = "the server is shutting down: this request's work was cut off at --graceful-timeout"


class Batcher:
    """Classifies the waiting requests on ``threads`` worker threads, a slice of each per batch.

    Args:
        classifier: the model.
        limits: the pixel limits and the slice size (``classify.Limits``).
        threads: batches in flight at once (each on its own thread; ONNX Runtime and much of Pillow and numpy
            release the GIL, so two overlap on two cores).
        max_batch: images per batch (a batch takes no further request's slice once it has this many).
        max_queued: images not yet decoded at most; beyond it a request is answered 503 (backpressure, not a queue
            that grows until memory runs out). Readiness turns false at half of it.
        abandoned: counts the images dropped (``.labels(reason).inc(n)``: ``client_gone``, ``shutdown``), or None.
        inline_pixels: a batch of single images of at most this many pixels in all (each body at most
            ``INLINE_BYTES``) runs on the event loop, not a thread (``INLINE_PIXELS``; 0: always a thread).
    """

    def __init__(self, classifier: Classifier, limits: Limits, threads: int = 1, max_batch: int = 512,
                 max_queued: int = 8192, abandoned: Any = None, inline_pixels: int = INLINE_PIXELS) -> None:
        self.classifier, self.limits, self.inline_pixels = classifier, limits, inline_pixels
        self.threads, self.max_batch, self.max_queued = threads, max_batch, max_queued
        self.abandoned = abandoned
        self.active: deque[Work] = deque()  # round robin: the next batch starts at the front
        self.wakeup = asyncio.Event()
        self.draining = False  # a graceful shutdown has begun: not ready
        self.closed = False  # past its deadline: no work taken at all
        self.batches = 0  # for the tests and the curious: how many model calls
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="ignite_lenet-inference")
        self.consumers: list[asyncio.Task] = []
        self._cut_off_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start the consumers (in the running event loop)."""
        self.consumers = [asyncio.create_task(self._consume(), name=f"ignite_lenet-batcher-{i}")
                          for i in range(self.threads)]

    def queued_images(self) -> int:
        return sum(work.remaining() for work in self.active)

    @property
    def ready(self) -> bool:
        """Taking work: not shutting down, and less than half of ``max_queued`` images waiting."""
        return not self.draining and self.queued_images() * 2 < self.max_queued

    async def submit(self, job: Job, client_gone: Callable[[], Awaitable[Any]] | None = None) -> Result:
        """The result of classifying ``job``; raises the ``ServiceError`` that refuses the whole request.

        ``client_gone``: awaited beside the work (e.g. the ASGI ``receive`` of a request whose body was read: it
        returns when the client disconnects); when it returns first, the work is dropped and ``ClientGone`` raised.
        """
        if self.closed:
            raise Unavailable(SHUTTING_DOWN)
        images = job.estimated_images()
        queued = self.queued_images()
        if queued and queued + images > self.max_queued:
            raise Unavailable(f"busy: {queued:,} images are waiting; retry shortly")
        work = Work(job, asyncio.get_running_loop().create_future())
        self.active.append(work)
        self.wakeup.set()
        try:
            if client_gone is None:
                return await work.future
            watcher = asyncio.ensure_future(client_gone())
            try:
                await asyncio.wait((work.future, watcher), return_when=asyncio.FIRST_COMPLETED)
            finally:
                watcher.cancel()
            if not work.future.done():
                self._drop(work, "client_gone")
                raise ClientGone("the client hung up")
            return work.future.result()
        except asyncio.CancelledError:  # the request's task was cancelled: nobody waits for the work
            self._drop(work, "client_gone")
            raise

    def begin_shutdown(self, graceful_timeout: float) -> None:
        """Answer what waits, not started, with 503 now, and what is in progress at the deadline
        (``graceful_timeout`` from now, a little before the server cancels the requests itself). Requests that
        were still arriving (their bodies) are taken meanwhile, and cut off at the deadline like the rest."""
        if self.draining:
            return
        self.draining = True
        for work in [w for w in self.active if not w.started]:
            self._drop(work, "shutdown", Unavailable(SHUTTING_DOWN))
        deadline = max(0.0, graceful_timeout - 0.2)
        self._cut_off_timer = asyncio.get_running_loop().call_later(deadline, self._cut_off)

    def _cut_off(self) -> None:
        self.closed = True
        for work in list(self.active):
            self._drop(work, "shutdown", Unavailable(CUT_OFF))

    def _drop(self, work: Work, reason: str, error: BaseException | None = None) -> None:
        """Take ``work`` out: its remaining images are not decoded (a thread running its slice stops at the next)."""
        if work.outcome is None and not work.cancelled and self.abandoned is not None:
            self.abandoned.labels(reason).inc(work.remaining())
        work.cancelled = True
        with contextlib.suppress(ValueError):
            self.active.remove(work)
        if not work.busy and work.items is not None:
            close(work.items)
        if error is not None and not work.future.done():
            work.future.set_exception(error)

    async def stop(self) -> None:
        """Stop the consumers and fail what is still waiting; a slice still on a thread is not waited for."""
        self.draining = self.closed = True
        if self._cut_off_timer is not None:
            self._cut_off_timer.cancel()
        for task in self.consumers:
            task.cancel()
        for task in self.consumers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for work in list(self.active):
            self._drop(work, "shutdown", Unavailable(SHUTTING_DOWN))
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _take_batch(self) -> list[Work]:
        """One slice of each waiting request that is not on a thread already, round robin, up to ``max_batch``."""
        batch: list[Work] = []
        images = 0
        for _ in range(len(self.active)):
            work = self.active[0]
            self.active.rotate(-1)
            if work.busy:
                continue
            batch.append(work)
            work.busy = True
            images += min(work.remaining(), self.limits.slice_images)
            if images >= self.max_batch:
                break
        return batch

    def _small(self, batch: list[Work]) -> bool:
        """Whether ``batch`` is single images of at most ``inline_pixels`` in all, opened here to know (a header
        read): work that costs less on the event loop than the hop to a thread and back."""
        if not self.inline_pixels:
            return False
        pixels = 0
        for work in batch:
            if not isinstance(work.job, Job) or not work.job.single or len(work.job.data) > INLINE_BYTES:
                return False
            if work.items is None:
                work.open(self.limits)
            if work.items is not None:
                pixels += work.items[0].pixels
            if pixels > self.inline_pixels:
                return False
        return True

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._take_batch()
            if not batch:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            self.batches += 1
            inline = False
            try:
                inline = self._small(batch)
                if inline:
                    run_batch(self.classifier, batch, self.limits)
                else:
                    await loop.run_in_executor(self.executor, run_batch, self.classifier, batch, self.limits)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug, not a client's input (those are ServiceErrors in the outcomes)
                for work in batch:
                    work.outcome = e
            finally:
                for work in batch:
                    work.busy = False
            for work in batch:
                if work.outcome is None or work.cancelled:
                    continue
                with contextlib.suppress(ValueError):
                    self.active.remove(work)
                if work.future.done():
                    continue
                if isinstance(work.outcome, BaseException):
                    work.future.set_exception(work.outcome)
                else:
                    work.future.set_result(work.outcome)
            if self.active:  # another consumer may be waiting for the works this batch held
                self.wakeup.set()
            if inline:  # the loop reads what arrived meanwhile before the next batch
                await asyncio.sleep(0)
