"""Dynamic batching: requests queue their images; a consumer takes everything queued and classifies it in one
hop to a worker thread, with one ONNX Runtime call for all of it.

One thread hop per request cost more than the model (a GIL handover and two wake-ups each way, ~150 us of CPU
against ~40 us for ONNX Runtime on one digit), and ONNX Runtime's fixed cost per call dominates at batch 1. So
while a batch is on the worker thread, new requests gather in the queue and become the next batch: no timer, no
added wait when the server is idle (a lone request is a batch of one), and under load the hop and the model call
are shared by every request that arrived meanwhile. Decoding, preprocessing, inference and JSON all run on the
worker thread, none on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ignite_lenet.inference.classifier import Classifier
from ignite_lenet.serving.classify import Job, Result, classify_jobs
from ignite_lenet.serving.errors import Unavailable


@dataclass
class Pending:
    """A queued job, how many images it holds (estimated), and where its result goes."""

    job: Job
    images: int
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Classifies queued jobs on ``threads`` worker threads, every job queued meanwhile in one batch.

    Args:
        classifier: the model.
        max_pixels: the largest image decoded (``read_gray``'s ``max_pixels``).
        threads: batches in flight at once (each on its own thread; ONNX Runtime and much of Pillow and numpy
            release the GIL, so two overlap on two cores).
        max_batch: images per batch (a batch is cut at job boundaries once it has this many).
        max_queued: images waiting at most; beyond it a request is answered 503 (backpressure, not a queue that
            grows until memory runs out).
    """

    def __init__(self, classifier: Classifier, max_pixels: int, threads: int = 1, max_batch: int = 512,
                 max_queued: int = 8192) -> None:
        self.classifier, self.max_pixels = classifier, max_pixels
        self.threads, self.max_batch, self.max_queued = threads, max_batch, max_queued
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.queued_images = 0
        self.batches = 0  # for the tests and the curious: how many model calls
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="ignite_lenet-inference")
        self.consumers: list[asyncio.Task] = []

    def start(self) -> None:
        """Start the consumers (in the running event loop)."""
        self.consumers = [asyncio.create_task(self._consume(), name=f"ignite_lenet-batcher-{i}")
                          for i in range(self.threads)]

    async def stop(self) -> None:
        """Stop the consumers, fail what is still queued, and join the threads."""
        for task in self.consumers:
            task.cancel()
        for task in self.consumers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self.queue.empty():
            pending = self.queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(Unavailable("the server is shutting down"))
        # joined on another thread: a batch still running must not hold the event loop (nor the other tasks)
        await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown, True)

    async def submit(self, job: Job) -> Result:
        """The result of classifying ``job``; raises the ``ServiceError`` that refuses the whole request."""
        images = job.estimated_images()
        if self.queued_images + images > self.max_queued and self.queued_images:
            raise Unavailable(f"busy: {self.queued_images:,} images are waiting; retry shortly")
        pending = Pending(job, images, asyncio.get_running_loop().create_future())
        self.queued_images += images
        self.queue.put_nowait(pending)
        return await pending.future

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            images = batch[0].images
            while images < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
                images += batch[-1].images
            self.queued_images -= images
            self.batches += 1
            try:
                results = await loop.run_in_executor(self.executor, run_jobs, self.classifier,
                                                     [pending.job for pending in batch], self.max_pixels)
            except asyncio.CancelledError:
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(Unavailable("the server is shutting down"))
                raise
            except Exception as e:  # a bug, not a client's input (those are ServiceErrors in the results)
                results = [e] * len(batch)
            for pending, result in zip(batch, results):
                if pending.future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)


def run_jobs(classifier: Classifier, jobs: list, max_pixels: int) -> list:
    """Each job's result, in order: ``classify.Job``s by ``classify_jobs``; a job of another type (``oip.InferJob``)
    by its type's ``run_batch(classifier, jobs)``, with every job of that type in the batch."""
    results: list = [None] * len(jobs)
    kinds: dict[type, list[int]] = {}
    for i, job in enumerate(jobs):
        kinds.setdefault(type(job), []).append(i)
    for kind, where in kinds.items():
        same = [jobs[i] for i in where]
        done = classify_jobs(classifier, same, max_pixels) if kind is Job else kind.run_batch(classifier, same)
        for i, result in zip(where, done):
            results[i] = result
    return results
