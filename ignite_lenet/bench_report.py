"""Turn pytest-benchmark JSON files into ``REPORT.md``, ``throughput.png`` and ``latency.png``.

    pytest benchmarks/ --benchmark-only --benchmark-json benchmarks/results/<machine>.json
    python -m ignite_lenet.bench_report benchmarks/results/*.json          # -> benchmarks/results/REPORT.md ...

Inference rows: engine, device, batch, threads, median latency, images/s, and the speed-up over eager PyTorch
on the same machine, device, batch and threads. Training rows: images/s per pipeline with the ratios that
matter (ours vs the notebook's pipeline, Ignite vs a plain loop).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .artifacts import atomic_write
from .plots import new_figure, save_figure
from .cli import ArgumentParser, run_cli

ENGINE_ORDER = ("eager", "torchscript", "torch-export", "torch-compile", "onnxruntime", "onnxruntime-int8")
PIPELINE_ORDER = ("notebook", "memory-plain-model", "memory-plain-loop", "ignite")


@dataclass(frozen=True)
class Row:
    machine: str
    kind: str  # "inference" or "training"
    engine: str
    device: str
    batch_size: int
    threads: int
    median_s: float
    images_per_s: float
    hardware: str


def load_rows(paths: list[str | Path]) -> list[Row]:
    """Benchmarks with images/s from pytest-benchmark JSON files (``ValueError`` for files that are not)."""
    rows: list[Row] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            data = json.loads(path.read_text())
            benchmarks = data["benchmarks"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}: not a pytest-benchmark JSON file (run pytest with --benchmark-json)") from None
        for bench in benchmarks:
            info = bench.get("extra_info", {})
            if "images_per_s" not in info or "kind" not in info:
                continue
            hardware = info.get("gpu") if str(info.get("device")).startswith("cuda") else info.get("cpu")
            common = dict(machine=path.stem, kind=info["kind"], device=str(info["device"]),
                          batch_size=int(info["batch_size"]), hardware=str(hardware),
                          threads=int(info.get("threads", info.get("torch_threads", 0))))
            # training rounds time several pipelines in turn: one row per pipeline, from its own turns
            per_pipeline = info.get("pipelines_images_per_s")
            if per_pipeline:
                images = info["images_per_round"] / len(per_pipeline)
                rows += [Row(engine=name, median_s=images / ips, images_per_s=float(ips), **common)
                         for name, ips in per_pipeline.items()]
            else:
                rows.append(Row(engine=info["engine"], median_s=float(bench["stats"]["median"]),
                                images_per_s=float(info["images_per_s"]), **common))
    if not rows:
        raise ValueError("no benchmark with images/s in the given files (were they run with --benchmark-only?)")
    return rows


def _order(value: str, order: tuple[str, ...]) -> int:
    return order.index(value) if value in order else len(order)


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def inference_table(rows: list[Row]) -> list[str]:
    rows = sorted((r for r in rows if r.kind == "inference"),
                  key=lambda r: (r.machine, r.device, r.batch_size, r.threads, _order(r.engine, ENGINE_ORDER)))
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
    rows = sorted((r for r in rows if r.kind == "training"),
                  key=lambda r: (r.machine, r.device, r.batch_size, _order(r.engine, PIPELINE_ORDER)))
    by_key = {(r.machine, r.device, r.batch_size, r.engine): r for r in rows}
    lines = ["| machine | device | batch | pipeline | images/s | vs notebook | Ignite vs plain loop |",
             "|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        notebook = by_key.get((r.machine, r.device, r.batch_size, "notebook"))
        plain = by_key.get((r.machine, r.device, r.batch_size, "memory-plain-loop"))
        vs_notebook = f"{r.images_per_s / notebook.images_per_s:.2f}x" if notebook else "–"
        overhead = f"{r.images_per_s / plain.images_per_s:.2f}x" if plain and r.engine == "ignite" else ""
        lines.append(f"| {r.machine} | {r.device} | {r.batch_size} | {r.engine} | {_fmt_rate(r.images_per_s)} | "
                     f"{vs_notebook} | {overhead} |")
    return lines


def plot_throughput(rows: list[Row], path: Path) -> Path:
    """images/s against batch size (log-log), one line per engine and device (all-core rows)."""
    fig, ax = new_figure((8, 5))
    inference = [r for r in rows if r.kind == "inference"]
    most_threads = {(r.machine, r.device): max(x.threads for x in inference if (x.machine, x.device) == (r.machine, r.device))
                    for r in inference}
    series: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for r in inference:
        if r.threads == most_threads[(r.machine, r.device)]:
            series[(r.machine, r.device, r.engine)].append(r)
    for (machine, device, engine), points in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1], _order(kv[0][2], ENGINE_ORDER))):
        points.sort(key=lambda r: r.batch_size)
        style = "-" if device == "cpu" else "--"
        label = f"{engine} ({device}{', ' + machine if len({k[0] for k in series}) > 1 else ''})"
        ax.plot([p.batch_size for p in points], [p.images_per_s for p in points], style, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (median)")
    ax.set_title("LeNet-5 inference throughput")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_latency(rows: list[Row], path: Path) -> Path:
    """Batch-1 median latency per engine, one bar group per device and thread count."""
    fig, ax = new_figure((8, 4.5))
    batch1 = [r for r in rows if r.kind == "inference" and r.batch_size == 1]
    groups = sorted({(r.machine, r.device, r.threads) for r in batch1})
    engines = sorted({r.engine for r in batch1}, key=lambda e: _order(e, ENGINE_ORDER))
    width = 0.8 / max(len(groups), 1)
    for g, group in enumerate(groups):
        values = {r.engine: r.median_s * 1e6 for r in batch1 if (r.machine, r.device, r.threads) == group}
        xs = [i + g * width for i, e in enumerate(engines) if e in values]
        bars = ax.bar(xs, [values[e] for e in engines if e in values], width,
                      label=f"{group[1]}, {group[2]} thread{'s' if group[2] > 1 else ''}"
                      + (f" ({group[0]})" if len({x[0] for x in groups}) > 1 else ""))
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(engines))], engines, rotation=20)
    ax.set_ylabel("batch-1 latency, µs (median)")
    ax.set_title("LeNet-5 single-image latency")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_report(paths: list[str | Path], output_dir: str | Path) -> list[Path]:
    """Write ``REPORT.md``, ``throughput.png`` and ``latency.png`` into ``output_dir``; returns their paths."""
    rows = load_rows(paths)
    output_dir = Path(output_dir)
    machines = sorted({(r.machine, r.device, r.hardware) for r in rows})
    lines = ["# Benchmark report", "", "Medians of pytest-benchmark rounds; each file is one machine, measured in one run.",
             "", "| machine | device | hardware |", "|---|---|---|"]
    lines += [f"| {m} | {d} | {h} |" for m, d, h in machines]
    if any(r.kind == "inference" for r in rows):
        lines += ["", "## Inference", "", "![throughput](throughput.png)", "", "![latency](latency.png)", "",
                  *inference_table(rows)]
    if any(r.kind == "training" for r in rows):
        lines += ["", "## Training (batches of real MNIST, summed cross-entropy, Adam)", "",
                  "The pipelines take turns inside every timed round (so the host's load falls on all alike); "
                  "images/s from the median of each pipeline's own turns.", "", *training_table(rows)]
    text = "\n".join(lines) + "\n"
    written = [atomic_write(output_dir / "REPORT.md", lambda f: f.write(text.encode()))]
    if any(r.kind == "inference" for r in rows):
        written += [plot_throughput(rows, output_dir / "throughput.png"), plot_latency(rows, output_dir / "latency.png")]
    return written


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m ignite_lenet.bench_report",
                            description="Summarise pytest-benchmark JSON files into a Markdown report and charts.")
    parser.add_argument("json_files", nargs="+", metavar="JSON", help="pytest-benchmark --benchmark-json outputs")
    parser.add_argument("--output-dir", metavar="DIR", default=None,
                        help="where REPORT.md, throughput.png and latency.png go (default: the first file's directory)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)

    def work() -> None:
        output_dir = args.output_dir or Path(args.json_files[0]).parent
        for path in write_report(args.json_files, output_dir):
            print(path)

    return run_cli(parser.prog, work)


if __name__ == "__main__":
    raise SystemExit(main())
