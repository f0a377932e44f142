"""The Markdown of ``REPORT.md``: every measurement, and CPU and GPU side by side, from checked ``Row``s."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from ignite_lenet.report.results import Row, Source, is_gpu

ENGINE_ORDER = ("eager", "torchscript", "torch-export", "torch-compile", "cuda-graph", "onnxruntime",
                "onnxruntime-int8")
PIPELINE_ORDER = ("notebook", "memory-plain-model", "memory-plain-loop", "ignite", "plain-cuda-graph",
                  "ignite-cuda-graph")


def rank(value: str, order: tuple[str, ...]) -> int:
    """Where ``value`` sorts in ``order``; names not in it come last."""
    return order.index(value) if value in order else len(order)


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def _fmt_ratio(x: float) -> str:
    return f"{x:,.0f}x" if x >= 100 else f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def inference_table(rows: list[Row]) -> list[str]:
    """Every inference row, with its speed-up over eager PyTorch on the same machine, device, batch, threads."""
    rows = sorted((r for r in rows if r.kind == "inference"),
                  key=lambda r: (r.machine, r.device, r.batch_size, r.threads, rank(r.engine, ENGINE_ORDER)))
    eager = {(r.machine, r.device, r.batch_size, r.threads): r for r in rows if r.engine == "eager"}
    lines = ["| machine | device | batch | threads | engine | median latency | images/s | vs eager |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        base = eager.get((r.machine, r.device, r.batch_size, r.threads))
        ratio = f"{base.median_s / r.median_s:.2f}x" if base else "–"
        lines.append(f"| {r.machine} | {r.device} | {r.batch_size} | {r.threads} | {r.engine} | "
                     f"{_fmt_time(r.median_s)} | {_fmt_rate(r.images_per_s)} | {ratio} |")
    return lines


def training_table(rows: list[Row]) -> list[str]:
    """Every training row, with its ratio to the notebook's pipeline and, for Ignite, to the plain loops."""
    rows = sorted((r for r in rows if r.kind == "training"),
                  key=lambda r: (r.machine, r.device, r.batch_size, rank(r.engine, PIPELINE_ORDER)))
    by_key = {(r.machine, r.device, r.batch_size, r.engine): r for r in rows}
    lines = ["| machine | device | batch | pipeline | images/s | vs notebook | Ignite vs plain loop | "
             "vs plain CUDA graph |", "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        def ratio(reference: str, only_ignite: bool) -> str:
            base = by_key.get((r.machine, r.device, r.batch_size, reference))
            if base is None or (only_ignite and r.engine != "ignite"):
                return ""
            return f"{r.images_per_s / base.images_per_s:.2f}x"

        lines.append(f"| {r.machine} | {r.device} | {r.batch_size} | {r.engine} | {_fmt_rate(r.images_per_s)} | "
                     f"{ratio('notebook', False) or '–'} | {ratio('memory-plain-loop', True)} | "
                     f"{ratio('plain-cuda-graph', False) if r.engine != 'plain-cuda-graph' else ''} |")
    return lines


def _device_pairs(rows: list[Row]) -> list[tuple[str, str]]:
    """(CPU machine, GPU machine) pairs to compare: every machine with CPU rows against every one with GPU rows."""
    cpus = sorted({r.machine for r in rows if r.device == "cpu"})
    gpus = sorted({r.machine for r in rows if is_gpu(r.device)})
    return [(c, g) for c in cpus for g in gpus]


def fastest_rows(rows: Iterable[Row]) -> dict[tuple[str, int], tuple[Row, bool]]:
    """(engine, batch) -> (fastest row over thread settings, whether several settings were measured)."""
    groups: dict[tuple[str, int], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r.engine, r.batch_size)].append(r)
    return {key: (max(group, key=lambda r: r.images_per_s), len(group) > 1) for key, group in groups.items()}


def _pick(rows: list[Row], kind: str, machine: str, gpu: bool) -> dict[tuple[str, int], tuple[Row, bool]]:
    return fastest_rows(r for r in rows if r.kind == kind and r.machine == machine and is_gpu(r.device) == gpu)


def _rate_text(row: Row) -> str:
    return _fmt_rate(row.images_per_s)


def _time_text(row: Row) -> str:
    return _fmt_time(row.median_s)


def _rate_of(entry: tuple[Row, bool]) -> float:
    return entry[0].images_per_s


def _cell(entry: tuple[Row, bool] | None, show: Callable[[Row], str], engine: bool = False) -> str:
    """``show(row)`` with the engine and thread count when they tell rows apart; "–" for no measurement."""
    if entry is None:
        return "–"
    row, several = entry
    value = show(row)
    notes = ([row.engine] if engine else []) + ([f"{row.threads} thread{'s' * (row.threads != 1)}"] if several else [])
    return f"{value} ({', '.join(notes)})" if notes else value


def side_by_side_table(rows: list[Row], cpu: str, gpu: str, kind: str = "inference") -> list[str]:
    """Engine (or pipeline) x batch: CPU images/s, GPU images/s, GPU/CPU; per batch, the best of each device."""
    order = ENGINE_ORDER if kind == "inference" else PIPELINE_ORDER
    on_cpu, on_gpu = _pick(rows, kind, cpu, False), _pick(rows, kind, gpu, True)
    label = "engine" if kind == "inference" else "pipeline"
    lines = [f"| {label} | batch | CPU images/s | GPU images/s | GPU/CPU |", "|---|---:|---:|---:|---:|"]
    for batch in sorted({b for _, b in on_cpu} | {b for _, b in on_gpu}):
        engines = sorted({e for e, b in [*on_cpu, *on_gpu] if b == batch}, key=lambda e: (rank(e, order), e))
        for engine in engines:
            c, g = on_cpu.get((engine, batch)), on_gpu.get((engine, batch))
            ratio = _fmt_ratio(g[0].images_per_s / c[0].images_per_s) if c and g else "–"
            lines.append(f"| {engine} | {batch} | {_cell(c, _rate_text)} | {_cell(g, _rate_text)} | {ratio} |")
        best_c = max((v for (_, b), v in on_cpu.items() if b == batch), key=_rate_of, default=None)
        best_g = max((v for (_, b), v in on_gpu.items() if b == batch), key=_rate_of, default=None)
        if best_c and best_g and len(engines) > 1:
            cells = (f"**{_cell(best, _rate_text, True)}**" for best in (best_c, best_g))
            ratio = _fmt_ratio(best_g[0].images_per_s / best_c[0].images_per_s)
            lines.append(f"| **best of each** | **{batch}** | {' | '.join(cells)} | **{ratio}** |")
    return lines


def latency_side_by_side_table(rows: list[Row], cpu: str, gpu: str) -> list[str]:
    """Batch-1 median latency per engine on the CPU (its fastest thread setting) and the GPU, and the speed-up."""
    on_cpu, on_gpu = _pick(rows, "inference", cpu, False), _pick(rows, "inference", gpu, True)
    engines = sorted({e for e, b in [*on_cpu, *on_gpu] if b == 1}, key=lambda e: (rank(e, ENGINE_ORDER), e))
    lines = ["| engine | CPU batch-1 latency | GPU batch-1 latency | GPU speed-up |", "|---|---:|---:|---:|"]
    for engine in engines:
        c, g = on_cpu.get((engine, 1)), on_gpu.get((engine, 1))
        ratio = _fmt_ratio(c[0].median_s / g[0].median_s) if c and g else "–"
        lines.append(f"| {engine} | {_cell(c, _time_text)} | {_cell(g, _time_text)} | {ratio} |")
    return lines


def report_markdown(sources: list[Source]) -> str:
    """The text of ``REPORT.md``: what was measured where, CPU and GPU side by side, then every measurement."""
    rows = [r for s in sources for r in s.rows]
    lines = ["# Benchmark report", "",
             "Medians of pytest-benchmark rounds. Each file is one machine, measured in one run:", "",
             "| file | device | hardware | what it is |", "|---|---|---|---|"]
    for s in sources:
        lines += [f"| {s.name} | {device} | {hardware} | {s.describe() or '–'} |"
                  for device, hardware in s.hardware.items()]
    inference = any(r.kind == "inference" for r in rows)
    pairs = _device_pairs(rows)
    if pairs:
        lines += ["", "## CPU and GPU side by side", "",
                  "CPU figures are the faster of the thread settings measured (the thread count is given where "
                  "there were several); ratios above 1 mean the GPU is faster. A dash: not measured on that "
                  "device."]
        by_name = {s.name: s for s in sources}
        for cpu, gpu in pairs:
            lines += ["", f"### CPU: {by_name[cpu].hardware.get('cpu', cpu)} ({cpu}) — GPU: "
                      f"{next((h for d, h in by_name[gpu].hardware.items() if is_gpu(d)), gpu)} ({gpu})"]
            if inference:
                lines += ["", "Inference, images/s:", "", *side_by_side_table(rows, cpu, gpu, "inference"), "",
                          "Batch-1 latency:", "", *latency_side_by_side_table(rows, cpu, gpu)]
            if any(r.kind == "training" and r.device == "cpu" for r in rows if r.machine == cpu) and any(
                    r.kind == "training" and is_gpu(r.device) for r in rows if r.machine == gpu):
                lines += ["", "Training, images/s:", "", *side_by_side_table(rows, cpu, gpu, "training")]
    if inference:
        lines += ["", "## Inference", "", "![throughput](throughput.png)", "", "![latency](latency.png)", "",
                  *inference_table(rows)]
    if any(r.kind == "training" for r in rows):
        lines += ["", "## Training (batches of real MNIST, summed cross-entropy, Adam)", "",
                  "The pipelines take turns inside every timed round (so the host's load falls on all alike); "
                  "images/s from the median of each pipeline's own turns.", "", *training_table(rows)]
    return "\n".join(lines) + "\n"
