"""Where one prediction request's time goes: each stage of a 28x28 PNG (a real MNIST test digit), in process,
and the whole request over HTTP against /healthz of the same server.

    python benchmarks/serve_stages.py --model exports/lenet5.onnx                # stages + HTTP, ~30 s
    PYTHONPATH=/tmp/base python benchmarks/serve_stages.py --model ... --no-http # an older checkout's stages

Stages: ``read_gray`` (PNG bytes -> gray floats), ``normalize_digit`` (polarity, MNIST framing), ``to_model_input``
(the exact 28->32 resize), ONNX Runtime (``session.run`` at batch 1, one intra-op thread), the JSON body. Each is
timed as the best of 7 rounds of N calls, CPU time of this thread (``time.thread_time``), so another process on a
shared machine slows a round without inflating the figure much. Only functions that exist in every version of the
package are called, so an older checkout (on ``PYTHONPATH``) is measured with the very same script. The HTTP part
(sequential requests on one keep-alive connection, wall-clock p50) needs the serving extra.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def best_us(fn, calls: int, rounds: int = 7) -> float:
    """The best of ``rounds`` rounds, in microseconds of this thread's CPU time per call."""
    for _ in range(max(10, calls // 10)):
        fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.thread_time() - start) / calls)
    return round(best * 1e6, 2)


def response_body(labels: np.ndarray, probs: np.ndarray, inverted: bool) -> bytes:
    """The JSON of one prediction, as the service sends it."""
    rounded = probs.astype(np.float64).round(6)
    rows = [{"label": int(label), "probability": float(p[label]), "probabilities": p.tolist(), "inverted": inverted}
            for label, p in zip(labels.tolist(), rounded)]
    return json.dumps({"predictions": rows}, separators=(",", ":")).encode()


def stages(model: str, data_dir: str, calls: int) -> dict:
    from PIL import Image

    import ignite_lenet
    from ignite_lenet.inference import OnnxClassifier
    from ignite_lenet.mnist.digits import normalize_digit, read_gray
    from ignite_lenet.mnist.idx import read_mnist
    from ignite_lenet.mnist.resize import to_model_input

    images, labels = read_mnist(data_dir, "test", download=False)
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, "PNG")
    png = buffer.getvalue()
    clf = OnnxClassifier(model, threads=1)
    gray = read_gray(io.BytesIO(png))
    digit, inverted = normalize_digit(gray)
    x = to_model_input(digit[None])
    logits = clf.session.run(None, {clf.input_name: x})[0]
    predicted, probs = clf.predict(digit[None])
    assert int(predicted[0]) == int(labels[0]) or True  # the figure does not depend on the answer

    def whole() -> bytes:  # the path of one request, by the package's public functions
        g = read_gray(io.BytesIO(png))
        d, inv = normalize_digit(g)
        lab, p = clf.predict(d[None])
        return response_body(lab, p, inv)

    result = {
        "package": str(Path(ignite_lenet.__file__).parent),
        "png_bytes": len(png),
        "us": {
            "read_gray": best_us(lambda: read_gray(io.BytesIO(png)), calls),
            "normalize_digit": best_us(lambda: normalize_digit(gray), calls),
            "to_model_input": best_us(lambda: to_model_input(digit[None]), calls),
            "onnxruntime_run": best_us(lambda: clf.session.run(None, {clf.input_name: x}), calls),
            "json": best_us(lambda: response_body(predicted, probs, inverted), calls),
            "classifier_predict": best_us(lambda: clf.predict(digit[None]), calls),
            "whole_in_process": best_us(whole, calls),
        },
    }
    del logits
    try:  # the service's own batched path, where this version has it
        from ignite_lenet.serving.classify import Job, Limits, Work, run_batch
    except ImportError:
        return result
    pngs = []
    for image in images[:32]:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    limits = Limits()
    result["us"]["service_batch_of_1"] = best_us(lambda: run_batch(clf, [Work(Job(png))], limits), calls)
    result["us"]["service_batch_of_32_per_image"] = round(
        best_us(lambda: run_batch(clf, [Work(Job(p)) for p in pngs], limits), max(1, calls // 32)) / 32, 2)
    return result


def http(model: str, data_dir: str, requests: int) -> dict:
    """Sequential requests on one keep-alive connection: /v1/predict with the PNG against /healthz."""
    import httpx

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import ServerProcess
    from PIL import Image

    from ignite_lenet.mnist.idx import read_mnist

    images, _ = read_mnist(data_dir, "test", download=False)
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, "PNG")
    png = buffer.getvalue()
    out = {}
    with ServerProcess(model, "--no-access-log") as server, httpx.Client(base_url=server.url) as client:
        for name, send in (("healthz", lambda: client.get("/healthz")),
                           ("predict_png", lambda: client.post("/v1/predict", content=png,
                                                               headers={"Content-Type": "image/png"}))):
            for _ in range(200):
                send()
            times = []
            for _ in range(requests):
                start = time.perf_counter()
                response = send()
                times.append(time.perf_counter() - start)
                assert response.status_code == 200
            out[name] = {"p50_us": round(1e6 * statistics.median(times), 1),
                         "p99_us": round(1e6 * sorted(times)[int(0.99 * len(times))], 1)}
    out["predict_minus_healthz_p50_us"] = round(out["predict_png"]["p50_us"] - out["healthz"]["p50_us"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="exports/lenet5.onnx")
    parser.add_argument("--data-dir", default=os.environ.get("IGNITE_LENET_DATA_DIR", "data"))
    parser.add_argument("--calls", type=int, default=2000, help="calls per round of each stage")
    parser.add_argument("--requests", type=int, default=2000, help="HTTP requests per endpoint")
    parser.add_argument("--no-http", action="store_true", help="the in-process stages only")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the figures here")
    args = parser.parse_args(argv)
    result = {"stages": stages(args.model, args.data_dir, args.calls), "load_average": os.getloadavg()}
    if not args.no_http:
        result["http"] = http(args.model, args.data_dir, args.requests)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
