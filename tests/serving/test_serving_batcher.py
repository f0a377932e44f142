"""The Batcher: requests that arrive while a batch is on the worker thread form the next batch, one model call
each; results go back to their own requests; a batch of a few small images runs on the event loop, anything
bigger on the thread; backpressure and shutdown answer 503. (The tests that hold a batch on the thread turn the
event-loop path off: ``inline_pixels=0``.)"""

from __future__ import annotations

import asyncio
import io
import json
import threading

import numpy as np
import pytest
from PIL import PngImagePlugin

from ignite_lenet.serving.batcher import INLINE_BYTES, Batcher
from ignite_lenet.serving.classify import Job, Limits
from ignite_lenet.serving.errors import NoDigit, Unavailable


class RecordingModel:
    """A stand-in model that records the size of each batch and the thread that ran it."""

    def __init__(self, real) -> None:
        self.real, self.sizes, self.threads = real, [], []

    def predict(self, images):
        self.sizes.append(len(images))
        self.threads.append(threading.get_ident())
        return self.real.predict(images)


class GatedModel:
    """A stand-in model that records its batch sizes and holds its first call until released."""

    def __init__(self, real) -> None:
        self.real, self.sizes = real, []
        self.gate = threading.Event()

    def predict(self, images):
        self.sizes.append(len(images))
        if len(self.sizes) == 1:
            self.gate.wait(10)
        return self.real.predict(images)


@pytest.fixture(scope="module")
def real_model(serving_model):
    from ignite_lenet.inference import OnnxClassifier

    return OnnxClassifier(serving_model)


def test_requests_queued_meanwhile_share_one_model_call(real_model, digits):
    model = GatedModel(real_model)

    async def scenario():
        batcher = Batcher(model, Limits(max_pixels=1_000_000), inline_pixels=0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(Job(digits[0].png)))
        await asyncio.sleep(0.05)  # the first batch (one job) is on the worker thread, held
        rest = [asyncio.ensure_future(batcher.submit(Job(d.png))) for d in digits[1:17]]
        blank = asyncio.ensure_future(batcher.submit(Job(_blank_png())))
        await asyncio.sleep(0.05)
        model.gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        blank_result = await asyncio.gather(blank, return_exceptions=True)
        await batcher.stop()
        return results, blank_result[0], batcher.batches

    results, blank, batches = asyncio.run(scenario())
    assert model.sizes == [1, 16]  # the blank image never reaches the model
    assert batches == 2
    expected = real_model.predict(np.stack([d.image for d in digits[:17]]))[0]
    got = [json.loads(r.body)["predictions"][0]["label"] for r in results]
    assert got == expected.tolist()
    assert isinstance(blank, NoDigit)


def _blank_png() -> bytes:
    from helpers import png_bytes

    return png_bytes(np.zeros((28, 28), np.uint8))


async def _one_held(model, digit, max_queued):
    """A started batcher (no event-loop path) whose first job, ``digit``, is held on the worker thread by
    ``model`` (a ``GatedModel``) until its gate is set."""
    batcher = Batcher(model, Limits(max_pixels=1_000_000), max_queued=max_queued, inline_pixels=0)
    batcher.start()
    running = asyncio.ensure_future(batcher.submit(Job(digit.png)))
    await asyncio.sleep(0.05)
    return batcher, running


def test_too_much_queued_is_503_and_shutdown_fails_what_waits(real_model, digits):
    model = GatedModel(real_model)

    async def scenario():
        batcher, running = await _one_held(model, digits[0], max_queued=4)
        waiting = [asyncio.ensure_future(batcher.submit(Job(d.png))) for d in digits[1:5]]
        await asyncio.sleep(0)
        with pytest.raises(Unavailable, match="busy: 4 images are waiting"):
            await batcher.submit(Job(digits[5].png))
        stop = asyncio.ensure_future(batcher.stop())  # while the first batch is still held
        await asyncio.sleep(0.05)
        model.gate.set()  # let the thread finish, so the executor can be joined
        await stop
        return await asyncio.gather(running, *waiting, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, Unavailable) and "shutting down" in o.message for o in outcomes), outcomes


def test_readiness_turns_false_when_half_the_queue_is_full_and_at_shutdown(real_model, digits):
    model = GatedModel(real_model)

    async def scenario():
        batcher, running = await _one_held(model, digits[0], max_queued=8)
        readiness = [batcher.ready]
        waiting = [asyncio.ensure_future(batcher.submit(Job(d.png))) for d in digits[1:5]]
        await asyncio.sleep(0)
        readiness.append(batcher.ready)  # 4 of 8 waiting
        batcher.begin_shutdown(graceful_timeout=5)
        readiness.append(batcher.ready)
        model.gate.set()
        outcomes = await asyncio.gather(running, *waiting, return_exceptions=True)
        await batcher.stop()
        return readiness, outcomes

    readiness, outcomes = asyncio.run(scenario())
    assert readiness == [True, False, False]
    assert json.loads(outcomes[0].body)["predictions"][0]["label"] >= 0  # in progress at SIGTERM: finished
    assert all(isinstance(o, Unavailable) and "shutting down" in o.message for o in outcomes[1:])  # waiting: 503


def test_a_few_small_images_are_one_model_call_on_the_event_loop(real_model, digits):
    model = RecordingModel(real_model)

    async def scenario():
        batcher = Batcher(model, Limits(max_pixels=1_000_000))
        batcher.start()
        results = await asyncio.gather(*[batcher.submit(Job(d.png)) for d in digits[:16]])
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert model.sizes == [16]  # 16 MNIST digits: 12,544 pixels, under INLINE_PIXELS
    assert model.threads == [threading.get_ident()]  # asyncio.run's loop runs on this thread
    expected = real_model.predict(np.stack([d.image for d in digits[:16]]))[0]
    assert [json.loads(r.body)["predictions"][0]["label"] for r in results] == expected.tolist()


def test_a_large_image_or_a_large_body_is_decoded_on_the_worker_thread(real_model, digits):
    from helpers import png_bytes
    from PIL import Image

    big = np.asarray(Image.fromarray(digits[0].image).resize((400, 400)))  # 160,000 pixels
    padded = io.BytesIO()  # a 28x28 digit in a body over INLINE_BYTES (a text chunk): its header is not read on the loop
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * (INLINE_BYTES + 1))
    Image.fromarray(digits[1].image).save(padded, "PNG", pnginfo=info)
    assert len(padded.getvalue()) > INLINE_BYTES
    model = RecordingModel(real_model)

    async def scenario():
        batcher = Batcher(model, Limits(max_pixels=1_000_000))
        batcher.start()
        results = [await batcher.submit(Job(png_bytes(big))), await batcher.submit(Job(padded.getvalue()))]
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert model.sizes == [1, 1]
    assert threading.get_ident() not in model.threads
    expected = real_model.predict(np.stack([digits[0].image, digits[1].image]))[0]
    assert [json.loads(r.body)["predictions"][0]["label"] for r in results] == expected.tolist()
