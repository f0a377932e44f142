"""Load benchmark of the Open Inference Protocol routes beside ``/v1/predict`` and ``/healthz``, with the bounded
client of ``serve_load.py`` (N keep-alive connections on 127.0.0.1) against one real server process.

    python benchmarks/oip_load.py --model exports/lenet5.onnx                       # ~1-2 min on 2 cores
    python benchmarks/oip_load.py --model exports/lenet5.onnx --server-args --onnx-threads 2
    python benchmarks/oip_load.py --smoke --model exports/lenet5.onnx               # seconds: what pytest runs

Scenarios, alternating within each repeat so that a slow stretch of a shared machine hits all of them: ``GET
/healthz``; ``POST /v1/predict`` with one PNG; OIP infer with JSON tensors and with binary tensors (what
``tritonclient.http`` sends by default), each at batch 1 and batch 256 (real MNIST test digits, ``lenet5.onnx``'s
FP32 ``[N, 1, 32, 32]`` input, every output asked for, binary outputs with binary inputs). Medians over the repeats;
the load average before and after is printed. Results: ``benchmarks/results/serving/oip-<name>.json``. Measured
and printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import (  # noqa: E402
    ServerProcess,
    add_load_arguments,
    report,
    http_request,
    machine,
    mnist_pngs,
    run_load,
)

OUTPUTS = ("logits", "probabilities", "label")


def infer_request(model: str, x, binary: bool) -> bytes:
    """A raw HTTP request of an OIP infer of ``x``: JSON tensors, or a JSON header and the tensor's bytes."""
    tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape)}
    outputs = [{"name": name, "parameters": {"binary_data": binary}} for name in OUTPUTS]
    path = f"/v2/models/{model}/infer"
    if not binary:
        body = json.dumps({"inputs": [{**tensor, "data": x.reshape(-1).tolist()}], "outputs": outputs}).encode()
        return http_request("POST", path, body, "application/json")
    blob = x.tobytes()
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": outputs}).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: {len(header)}\r\nContent-Length: {len(header) + len(blob)}\r\n\r\n")
    return head.encode() + header + blob


def measure(model: str, data_dir: str, requests: int, batch_requests: int, connections: int, batch: int,
            repeats: int, server_args: list[str], log=print) -> dict:
    from ignite_lenet.mnist.idx import read_mnist
    from ignite_lenet.mnist.resize import to_model_input

    images, _ = read_mnist(data_dir, "test", download=False)
    x = to_model_input(images[: max(batch, 100) * 4])  # (N, 1, 32, 32) float32
    name = Path(model).name.removesuffix(".onnx")
    pngs, _ = mnist_pngs(data_dir, 100)
    scenarios = [  # (name, requests, total, connections, images per request)
        ("healthz", [http_request("GET", "/healthz")], requests, connections, 1),
        ("predict_png", [http_request("POST", "/v1/predict", p, "image/png") for p in pngs], requests, connections, 1),
        ("oip_json_b1", [infer_request(name, x[i : i + 1], False) for i in range(100)], requests, connections, 1),
        ("oip_binary_b1", [infer_request(name, x[i : i + 1], True) for i in range(100)], requests, connections, 1),
        (f"oip_json_b{batch}", [infer_request(name, x[i * batch : (i + 1) * batch], False) for i in range(4)],
         batch_requests, min(connections, 4), batch),
        (f"oip_binary_b{batch}", [infer_request(name, x[i * batch : (i + 1) * batch], True) for i in range(4)],
         batch_requests, min(connections, 4), batch),
    ]
    runs: list[dict] = []
    with ServerProcess(model, "--no-access-log", "--max-body-bytes", str(16 * 1024 * 1024), *server_args) as server:
        for scenario, reqs, total, conns, per in scenarios:  # each answers 200 before it is measured
            assert run_load(server.port, "check", 1, reqs[:1], 1, 1, warmup=0).errors == 0, scenario
        for repeat in range(repeats):
            for scenario, reqs, total, conns, per in scenarios:
                result = run_load(server.port, scenario, 1, reqs, total, conns, images_per_request=per,
                                  warmup=min(200, total) if per == 1 else 8, server_pid=server.process.pid)
                runs.append({"repeat": repeat, **asdict(result), "images_per_s": round(result.images_per_s, 1)})
                log(f"  repeat {repeat} {scenario:16s} {result.requests_per_s:9,.0f} req/s {result.images_per_s:9,.0f} "
                    f"images/s  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  errors {result.errors}  "
                    f"server CPU {result.server_cpu_us_per_request:8.1f} us/request  ({result.connections} conns)")
    summary = {}
    for scenario, *_ in scenarios:
        rows = [r for r in runs if r["scenario"] == scenario]
        summary[scenario] = {**{key: statistics.median(r[key] for r in rows) for key in (
            "requests_per_s", "images_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")},
            "errors": sum(r["errors"] for r in rows), "runs_images_per_s": [r["images_per_s"] for r in rows]}
    return {"summary": summary, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, requests=5000, batch_requests=200)
    parser.add_argument("--smoke", action="store_true", help="a few requests, one repeat, no file: a check")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                        help="the rest of the command line goes to python -m ignite_lenet.serve")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.batch_requests, args.repeats, args.connections, args.batch = 100, 4, 1, 4, 16
    started = time.time()
    info = machine()
    print(f"OIP load benchmark: {info['cpu']}, {info['cores']} cores, load {info['load_average_at_start']}, "
          f"server args {args.server_args}")
    result = measure(args.model, args.data_dir, args.requests, args.batch_requests, args.connections, args.batch,
                     args.repeats, args.server_args)
    info["load_average_at_end"] = os.getloadavg()
    print(f"load average at the end: {info['load_average_at_end']}")
    return report(result, args, info, started, prefix="oip-")


if __name__ == "__main__":
    raise SystemExit(main())
