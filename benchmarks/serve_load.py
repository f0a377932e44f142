"""Load benchmark of the HTTP service: a real server (``python -m ignite_lenet.serve``) in a subprocess, driven by a
bounded asyncio client over N concurrent keep-alive connections on 127.0.0.1.

    python benchmarks/serve_load.py --model exports/lenet5.onnx                  # the full run, ~2-4 min on 2 cores
    python benchmarks/serve_load.py --model exports/lenet5.onnx --repeats 3 --requests 20000
    python benchmarks/serve_load.py --smoke --model exports/lenet5.onnx          # seconds: what plain pytest runs

Side by side in one run, with the same client: ``GET /healthz`` (the stack's ceiling: HTTP, routing, middleware,
nothing else) and ``POST /v1/predict`` with one real MNIST test digit as a PNG (a different one each request),
each with 1 and 2 workers; ``POST /v1/predict`` multipart with 256 PNGs per request (images/s); the cold start
(process start to the first 200 on /healthz, in a process that never imports torch: checked at its exit).
When ``wrk`` is installed, the same server also answers ``/healthz`` and the one-PNG predictions driven by wrk
(``--wrk-seconds`` each, a Lua script cycling through the same 100 PNGs; scenarios ``*_wrk``): a C client that
needs less of the shared cores than the asyncio one. Scenarios alternate within each repeat, so a slow stretch
of a shared machine hits all of them; medians over the repeats are reported.

``--checkouts A B`` serves each of several checkouts of the package (each by ``PYTHONPATH``), interleaved within
every repeat: a before and an after measured side by side in one run, under the same load.

    python benchmarks/serve_load.py --model m.onnx --checkouts /tmp/before . --name before-after

Results: ``benchmarks/results/serving/<name>.json``. Numbers are measured and printed, never asserted (the smoke
test only checks that the benchmark runs and nothing failed).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # helpers.ServerProcess: the tests' way of starting a real server

from helpers import PYTHON, ServerProcess  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "serving"
TIME_CAP_S = 300.0  # no scenario runs longer than this, whatever --requests says
# the server process reports at exit whether it ever imported torch (the serving path must not)
NO_TORCH_LAUNCHER = [PYTHON, "-c", (
    "import runpy, sys\n"
    "try:\n    runpy.run_module('ignite_lenet.serve', run_name='__main__', alter_sys=True)\n"
    "finally:\n    print('torch imported:', any(m.split('.')[0] == 'torch' for m in sys.modules), flush=True)\n")]


def launcher(checkout: str, base: list[str] | None = None) -> list[str] | None:
    """A server command that imports the package from ``checkout`` (first on ``sys.path``, which the workers'
    interpreters copy: ``PYTHONPATH`` alone loses to the working directory of ``python -m``) and says which."""
    if not checkout:
        return base
    code = (base or [PYTHON, "-c", "import runpy\nrunpy.run_module('ignite_lenet.serve', run_name='__main__', "
                                   "alter_sys=True)\n"])[2]
    first = (f"import sys\nsys.path.insert(0, {str(Path(checkout).resolve())!r})\nimport ignite_lenet\n"
             "print('package:', ignite_lenet.__file__, flush=True)\n")
    return [PYTHON, "-c", first + code]


@dataclass
class Load:
    """One scenario's measurement."""

    scenario: str
    workers: int
    connections: int
    requests: int
    errors: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    images_per_request: int = 1
    server_cpu_us_per_request: float = float("nan")  # CPU of the server's processes over the measurement

    @property
    def images_per_s(self) -> float:
        return self.requests_per_s * self.images_per_request


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its descendants (the workers), from /proc."""
    total, todo = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):  # it ended meanwhile, or no /proc (then the figure is 0)
            continue
    return total


def http_request(method: str, path: str, body: bytes = b"", content_type: str | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def multipart_body(pngs: list[bytes], boundary: str = "ignite-lenet-load") -> tuple[bytes, str]:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n'
             f"Content-Type: image/png\r\n\r\n".encode() + png + b"\r\n" for i, png in enumerate(pngs)]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def _drive(port: int, requests: list[bytes], total: int, connections: int, time_cap: float
                 ) -> tuple[list[float], int, float]:
    """Send ``total`` requests (cycling through ``requests``) over ``connections`` keep-alive connections."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.monotonic() + time_cap

    async def connection() -> None:
        nonlocal issued, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while issued < total and time.monotonic() < deadline:
                data = requests[issued % len(requests)]
                issued += 1
                start = time.perf_counter()
                try:
                    writer.write(data)
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        if line[:15].lower() == b"content-length:":
                            length = int(line[15:])
                    await reader.readexactly(length)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - start)
                if head[9:12] != b"200":
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies, errors, time.perf_counter() - started


def run_load(port: int, scenario: str, workers: int, requests: list[bytes], total: int, connections: int,
             images_per_request: int = 1, warmup: int = 200, time_cap: float = TIME_CAP_S,
             server_pid: int | None = None) -> Load:
    """Warm up, then measure ``total`` requests; latencies are per request, client-side; with ``server_pid``, the
    server's CPU per request too (a figure another process on the machine barely changes)."""
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - the serving extra has uvloop
        pass

    def run(count: int) -> tuple[list[float], int, float]:
        coroutine = _drive(port, requests, count, connections, time_cap)
        if loop_factory is None:
            return asyncio.run(coroutine)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(coroutine)

    if warmup:
        run(min(warmup, total))
    cpu_before = tree_cpu_s(server_pid) if server_pid else 0.0
    latencies, errors, seconds = run(total)
    cpu = (tree_cpu_s(server_pid) - cpu_before) if server_pid else float("nan")
    ordered = sorted(latencies) or [float("nan")]

    def pct(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    done = len(latencies)
    return Load(scenario, workers, connections, done + (total - done if errors else 0), errors,
                round(seconds, 3), round(done / seconds, 1), round(pct(0.50), 3), round(pct(0.99), 3),
                round(1000 * ordered[-1], 3), images_per_request, round(1e6 * cpu / max(done, 1), 1))


def wrk_scripts(directory: Path, pngs: list[bytes]) -> dict[str, Path]:
    """wrk Lua scripts: ``GET /healthz``, and ``POST /v1/predict`` cycling through ``pngs``; both build each request
    in a ``request()`` function, so the client does the same work per request in both."""
    bodies = ",".join('"' + "".join(f"\\{byte}" for byte in png) + '"' for png in pngs)
    scripts = {
        "healthz_wrk": 'request = function()\n  return wrk.format("GET", "/healthz")\nend\n',
        "predict_png_wrk": f"local bodies = {{{bodies}}}\nlocal i = 0\nrequest = function()\n  i = i % #bodies + 1\n"
                           '  return wrk.format("POST", "/v1/predict", {["Content-Type"] = "image/png"}, bodies[i])\n'
                           "end\n",
    }
    paths = {}
    for scenario, text in scripts.items():
        paths[scenario] = directory / f"{scenario}.lua"
        paths[scenario].write_text(text)
    return paths


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(port: int, scenario: str, workers: int, script: Path, seconds: float, connections: int,
            server_pid: int | None = None) -> Load:
    """``wrk`` for ``seconds`` (one thread, ``connections`` keep-alive connections, after a 1 s warm-up); errors are
    its non-2xx answers and socket errors; the server's CPU per request from /proc, as ``run_load``."""
    url = f"http://127.0.0.1:{port}"
    base = ["wrk", "-t1", f"-c{connections}", "--timeout", "5s", "-s", str(script)]
    subprocess.run([*base, "-d1s", url], capture_output=True, timeout=60, check=True)
    cpu_before = tree_cpu_s(server_pid) if server_pid else 0.0
    out = subprocess.run([*base, f"-d{seconds:g}s", "--latency", url], capture_output=True, text=True,
                         timeout=seconds + 60, check=True).stdout
    cpu = (tree_cpu_s(server_pid) - cpu_before) if server_pid else float("nan")
    summary = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", out)  # "51234 requests in 10.00s, 9.1MB read"
    done, wall = int(summary.group(1)), float(summary.group(2)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[summary.group(3)]

    def pct(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        return round(float(match.group(1)) * WRK_UNITS[match.group(2)], 3) if match else float("nan")

    maximum = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(n) for n in socket.groups()) if socket else 0
    return Load(scenario, workers, connections, done, errors, round(wall, 3), round(done / wall, 1), pct("50"),
                pct("99"), round(float(maximum.group(1)) * WRK_UNITS[maximum.group(2)], 3) if maximum else float("nan"),
                1, round(1e6 * cpu / max(done, 1), 1))


def mnist_pngs(data_dir: str, count: int) -> tuple[list[bytes], list[int]]:
    """The first ``count`` MNIST test digits as PNG files, and their labels."""
    from PIL import Image

    from ignite_lenet.mnist.idx import read_mnist

    images, labels = read_mnist(data_dir, "test", download=False)
    pngs = []
    for image in images[:count]:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs, labels[:count].tolist()


def cold_start(model: str, repeats: int, checkout: str = "") -> dict:
    """Process start to the first 200 on /healthz, and whether that process ever imported torch."""
    times, torch_seen = [], []
    for _ in range(repeats):
        server = ServerProcess(model, "--no-access-log", launcher=launcher(checkout, NO_TORCH_LAUNCHER)).start()
        times.append(server.ready_s)
        server.stop()
        torch_seen.append(any(line == "torch imported: True" for line in server.lines))
        assert any(line.startswith("torch imported:") for line in server.lines), server.lines
    return {"seconds": [round(t, 3) for t in times], "median_s": round(statistics.median(times), 3),
            "torch_imported": any(torch_seen)}


def measure(model: str, data_dir: str, requests: int, connections: int, batch: int, batch_requests: int,
            repeats: int, workers: tuple[int, ...], cold_repeats: int, log=print, wrk_seconds: float = 0.0,
            checkouts: tuple[str, ...] = ()) -> dict:
    """Every scenario with every worker count (and every checkout), interleaved, ``repeats`` times; the medians."""
    pngs, labels = mnist_pngs(data_dir, max(batch, 100))
    single = [http_request("POST", "/v1/predict", png, "image/png") for png in pngs[:100]]
    health = [http_request("GET", "/healthz")]
    body, kind = multipart_body(pngs[:batch])
    batched = [http_request("POST", "/v1/predict", body, kind)]
    if wrk_seconds and not shutil.which("wrk"):
        log("  wrk is not installed: no *_wrk scenarios")
        wrk_seconds = 0.0
    scratch = Path(tempfile.mkdtemp(prefix="serve-load-"))
    scripts = wrk_scripts(scratch, pngs[:100]) if wrk_seconds else {}
    trees = checkouts or ("",)  # "": the package this Python imports
    runs: list[dict] = []
    for repeat in range(repeats):
        for n in workers:
            for tree in trees:
                with ServerProcess(model, "--workers", str(n), "--no-access-log", launcher=launcher(tree)) as server:
                    if tree:  # the package really came from there
                        package = str(Path(tree).resolve() / "ignite_lenet" / "__init__.py")
                        assert f"package: {package}" in server.lines, server.lines[:3]
                    # the server answers right before the measurement: the digits' labels come back as expected
                    check = run_load(server.port, "check", n, single[:1], 1, 1, warmup=0)
                    assert check.errors == 0
                    pid = server.process.pid
                    results = []
                    for scenario, reqs, total, conns, per in (
                            ("healthz", health, requests, connections, 1),
                            ("predict_png", single, requests, connections, 1),
                            ("predict_multipart", batched, batch_requests, min(connections, 4 * n), batch)):
                        results.append(run_load(server.port, scenario, n, reqs, total, conns, images_per_request=per,
                                                warmup=min(200, total) if per == 1 else 4, server_pid=pid))
                    for scenario, script in scripts.items():
                        results.append(run_wrk(server.port, scenario, n, script, wrk_seconds, connections, pid))
                for result in results:
                    runs.append({"repeat": repeat, "checkout": tree, **asdict(result),
                                 "images_per_s": round(result.images_per_s, 1)})
                    log(f"  repeat {repeat} workers {n} {tree + ' ' if tree else ''}{result.scenario:18s} "
                        f"{result.requests_per_s:9,.0f} req/s {result.images_per_s:9,.0f} images/s  p50 "
                        f"{result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  errors {result.errors}  server CPU "
                        f"{result.server_cpu_us_per_request:7.1f} us/request  ({result.requests} requests, "
                        f"{result.connections} connections)")
    shutil.rmtree(scratch, ignore_errors=True)
    summary = {}
    scenarios = ("healthz", "predict_png", "predict_multipart", *scripts)
    for tree in trees:
        prefix = f"{tree}:" if len(trees) > 1 else ""
        for n in workers:
            for scenario in scenarios:
                rows = [r for r in runs if r["workers"] == n and r["scenario"] == scenario and r["checkout"] == tree]
                summary[f"{prefix}{scenario}@{n}"] = {
                    **{key: statistics.median(r[key] for r in rows)
                       for key in ("requests_per_s", "images_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")},
                    "max_p99_ms": max(r["p99_ms"] for r in rows),
                    "errors": sum(r["errors"] for r in rows), "requests": sum(r["requests"] for r in rows),
                    "runs": [r["requests_per_s"] for r in rows]}
            for suffix in ("", "_wrk") if scripts else ("",):
                health_rows = [r for r in runs if r["workers"] == n and r["scenario"] == f"healthz{suffix}"
                               and r["checkout"] == tree]
                png_rows = [r for r in runs if r["workers"] == n and r["scenario"] == f"predict_png{suffix}"
                            and r["checkout"] == tree]
                # the ratio within each server start (measured a few seconds apart), then the median of those
                ratios = [p["requests_per_s"] / h["requests_per_s"] for h, p in zip(health_rows, png_rows)
                          if h["requests_per_s"]]
                if ratios:
                    summary[f"{prefix}predict_vs_healthz{suffix}@{n}"] = round(statistics.median(ratios), 3)
    cold = {}
    for tree in trees:
        cold[tree or "."] = cold_start(model, cold_repeats, tree)
        log(f"  cold start{' ' + tree if tree else ''}: median {cold[tree or '.']['median_s']:.3f} s over "
            f"{cold_repeats} ({cold[tree or '.']['seconds']}); torch imported: {cold[tree or '.']['torch_imported']}")
    return {"summary": summary, "cold_start": cold if len(trees) > 1 else cold["."], "runs": runs}


def machine() -> dict:
    import onnxruntime

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "load_average_at_start": load}


def add_load_arguments(parser: argparse.ArgumentParser, requests: int, batch_requests: int) -> None:
    """The flags every load benchmark here shares: what is served, the digits sent, how much load, how often."""
    parser.add_argument("--model", default="exports/lenet5.onnx", help="the ONNX model to serve (default: %(default)s)")
    parser.add_argument("--data-dir", default=os.environ.get("IGNITE_LENET_DATA_DIR", "data"),
                        help="MNIST, for the digits sent (default: $IGNITE_LENET_DATA_DIR or ./data)")
    parser.add_argument("--requests", type=int, default=requests, help="requests per one-image scenario")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections")
    parser.add_argument("--batch", type=int, default=256, help="images per batched request")
    parser.add_argument("--batch-requests", type=int, default=batch_requests, help="requests per batched scenario")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every scenario (medians are reported)")
    parser.add_argument("--name", default=None, help="results file name (default: a timestamp)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, requests=20_000, batch_requests=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server worker counts to compare")
    parser.add_argument("--cold-starts", type=int, default=5, help="cold starts to time")
    parser.add_argument("--wrk-seconds", type=float, default=10.0,
                        help="seconds of each wrk scenario, when wrk is installed (0: none)")
    parser.add_argument("--checkouts", nargs="+", default=[], metavar="DIR",
                        help="checkouts of the package to serve, each by PYTHONPATH, interleaved (default: the one "
                        "this Python imports)")
    parser.add_argument("--smoke", action="store_true", help="a few hundred requests, one repeat, no file: a check")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.batch_requests, args.repeats, args.cold_starts = 300, 4, 1, 1
        args.connections, args.batch, args.wrk_seconds = 8, 32, min(args.wrk_seconds, 1.0)
    started = time.time()
    info = machine()
    print(f"serving load benchmark: {info['cpu']}, {info['cores']} cores, load {info['load_average_at_start']}")
    result = measure(args.model, args.data_dir, args.requests, args.connections, args.batch, args.batch_requests,
                     args.repeats, tuple(args.workers), args.cold_starts, wrk_seconds=args.wrk_seconds,
                     checkouts=tuple(args.checkouts))
    return report(result, args, info, started)


def report(result: dict, args: argparse.Namespace, info: dict, started: float, prefix: str = "") -> int:
    """Print the summary and (unless ``--smoke``) write ``results/serving/PREFIX{--name}.json`` with the machine
    and the settings; the exit status: 1 when any request failed."""
    result = {"machine": info, "settings": {k: v for k, v in vars(args).items() if k != "name"},
              "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
              "wall_s": round(time.time() - started, 1), **result}
    width = max(map(len, result["summary"]), default=0) + 1
    for key, row in result["summary"].items():
        print(f"{key:{width}s} {json.dumps(row)}")
    if not args.smoke:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{prefix}{args.name or time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return 1 if any(row.get("errors") for row in result["summary"].values() if isinstance(row, dict)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
