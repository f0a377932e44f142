"""The Batcher: requests that arrive while a batch is on the worker thread form the next batch, one model call
each; results go back to their own requests; backpressure and shutdown answer 503."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from ignite_lenet.serving.batcher import Batcher
from ignite_lenet.serving.classify import Job, Limits
from ignite_lenet.serving.errors import NoDigit, Unavailable


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
        batcher = Batcher(model, Limits(max_pixels=1_000_000))
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


def test_too_much_queued_is_503_and_shutdown_fails_what_waits(real_model, digits):
    model = GatedModel(real_model)

    async def scenario():
        batcher = Batcher(model, Limits(max_pixels=1_000_000), max_queued=4)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(Job(digits[0].png)))
        await asyncio.sleep(0.05)  # held on the worker thread
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
        batcher = Batcher(model, Limits(max_pixels=1_000_000), max_queued=8)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(Job(digits[0].png)))
        await asyncio.sleep(0.05)  # held on the worker thread
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
