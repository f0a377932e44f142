"""Turn pytest-benchmark JSON files into ``REPORT.md``, ``throughput.png`` and ``latency.png``.

    pytest benchmarks/ --benchmark-only --benchmark-json benchmarks/results/<machine>.json
    python -m ignite_lenet.bench_report benchmarks/results/*.json          # -> benchmarks/results/REPORT.md ...

Each file is one machine measured in one run; its name (without ``.json``) names it in the tables, and an
optional ``<name>.note.txt`` beside it says in one line what it is (which machine, commit, date; before which
change). With CPU and CUDA measurements the report puts the devices side by side: per engine and batch, CPU
images/s, GPU images/s and their ratio, in tables and in both charts. Every input is read and checked before
anything is written; a bad one is a ``ValueError`` (or ``OSError``) naming the file and what is wrong.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .artifacts import atomic_write, check_output_dir
from .bench_results import KINDS, NOTE_SUFFIX, Row, Source, load_rows, load_source, load_sources
from .bench_tables import (
    ENGINE_ORDER, PIPELINE_ORDER, fastest_rows, inference_table, is_gpu, latency_side_by_side_table, rank,
    report_markdown, side_by_side_table, training_table,
)
from .cli import ArgumentParser, run_cli
from .plots import new_figure

__all__ = [  # reading the inputs lives in bench_results, the tables in bench_tables; their names stay importable here
    "ENGINE_ORDER", "KINDS", "NOTE_SUFFIX", "OUTPUTS", "PIPELINE_ORDER", "Row", "Source", "get_args_parser",
    "inference_table", "latency_figure", "latency_side_by_side_table", "load_rows", "load_source", "load_sources",
    "main", "render_report", "report_markdown", "side_by_side_table", "throughput_figure", "training_table",
    "write_report",
]

OUTPUTS = ("REPORT.md", "throughput.png", "latency.png")
CPU_BAR_COLORS = ("#6baed6", "#2171b5", "#08306b", "#9ecae1")
GPU_BAR_COLORS = ("#fd8d3c", "#d94801", "#fdae6b", "#7f2704")
ENGINE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                 "tab:gray", "tab:olive", "tab:cyan")


def _engine_color(engine: str) -> str:
    i = rank(engine, ENGINE_ORDER)
    return ENGINE_COLORS[i] if i < len(ENGINE_ORDER) else "black"


def _series_label(sources: dict[str, Source], machine: str, device: str) -> str:
    hardware = sources[machine].hardware.get(device, "") if machine in sources else ""
    return f"{'GPU' if is_gpu(device) else 'CPU'}: {hardware.split(',')[0] or device} ({machine})"


def throughput_figure(rows: list[Row], sources: dict[str, Source] | None = None) -> Figure:
    """Inference images/s against batch size (log-log): colour per engine, line style per machine and device."""
    sources = sources or {}
    fig, ax = new_figure((9, 5.5))
    inference = [r for r in rows if r.kind == "inference"]
    keys = sorted({(r.machine, r.device) for r in inference}, key=lambda k: (is_gpu(k[1]), k))
    styles = dict(zip(keys, ["-", "--", ":", "-."] * (len(keys) // 4 + 1)))
    for machine, device in keys:
        fastest = fastest_rows(r for r in inference if (r.machine, r.device) == (machine, device))
        for engine in sorted({e for e, _ in fastest}, key=lambda e: (rank(e, ENGINE_ORDER), e)):
            points = sorted((row for (e, _), (row, _) in fastest.items() if e == engine), key=lambda r: r.batch_size)
            ax.plot([p.batch_size for p in points], [p.images_per_s for p in points], styles[(machine, device)],
                    marker="s" if is_gpu(device) else "o", ms=4, color=_engine_color(engine))
    engines = sorted({r.engine for r in inference}, key=lambda e: (rank(e, ENGINE_ORDER), e))
    first = ax.legend([Line2D([], [], color=_engine_color(e), marker="o", ms=4) for e in engines], engines,
                      title="engine", fontsize=8, loc="upper left")
    ax.add_artist(first)
    ax.legend([Line2D([], [], color="black", ls=styles[k], marker="s" if is_gpu(k[1]) else "o", ms=4) for k in keys],
              [_series_label(sources, *k) for k in keys], title="device", fontsize=8, loc="lower right")
    ax.set_xscale("log", base=2)
    batches = sorted({r.batch_size for r in inference})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (median; CPU: its faster thread setting)")
    ax.set_title("LeNet-5 inference throughput, CPU and GPU")
    ax.grid(alpha=0.3, which="both")
    return fig


def latency_figure(rows: list[Row], sources: dict[str, Source] | None = None) -> Figure:
    """Batch-1 median latency per engine, one bar per machine, device and thread count (CPU blues, GPU oranges)."""
    sources = sources or {}
    fig, ax = new_figure((9, 4.8))
    batch1 = [r for r in rows if r.kind == "inference" and r.batch_size == 1]
    groups = sorted({(r.machine, r.device, r.threads) for r in batch1}, key=lambda g: (is_gpu(g[1]), g))
    engines = sorted({r.engine for r in batch1}, key=lambda e: (rank(e, ENGINE_ORDER), e))
    width = 0.8 / max(len(groups), 1)
    counts = {False: 0, True: 0}
    for g, (machine, device, threads) in enumerate(groups):
        values = {r.engine: r.median_s * 1e6 for r in batch1
                  if (r.machine, r.device, r.threads) == (machine, device, threads)}
        xs = [i + g * width for i, e in enumerate(engines) if e in values]
        palette = GPU_BAR_COLORS if is_gpu(device) else CPU_BAR_COLORS
        color = palette[counts[is_gpu(device)] % len(palette)]
        counts[is_gpu(device)] += 1
        label = _series_label(sources, machine, device)
        if not is_gpu(device):
            label += f", {threads} thread{'s' * (threads != 1)}"
        bars = ax.bar(xs, [values[e] for e in engines if e in values], width, color=color, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(engines))], engines, rotation=15,
                  ha="right", rotation_mode="anchor")
    ax.set_ylabel("batch-1 latency, µs (median)")
    ax.set_title("LeNet-5 single-image latency, CPU and GPU")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def render_report(sources: list[Source]) -> dict[str, bytes]:
    """``{file name: contents}`` of the report: ``REPORT.md``, and the two charts when there is inference data."""
    rows = [r for s in sources for r in s.rows]
    outputs = {"REPORT.md": report_markdown(sources).encode()}
    if any(r.kind == "inference" for r in rows):
        by_name = {s.name: s for s in sources}
        outputs["throughput.png"] = _png(throughput_figure(rows, by_name))
        outputs["latency.png"] = _png(latency_figure(rows, by_name))
    return outputs


def write_report(paths: Iterable[str | Path], output_dir: str | Path) -> list[Path]:
    """Write ``REPORT.md``, ``throughput.png`` and ``latency.png`` into ``output_dir``; returns their paths.

    Every input is read and checked and every output rendered before the first file is written; each file is
    replaced atomically, the charts before the report that shows them.
    """
    sources = load_sources(paths)
    output_dir = check_output_dir(output_dir)
    outputs = render_report(sources)
    written = {name: atomic_write(output_dir / name, lambda f, data=data: f.write(data))
               for name, data in sorted(outputs.items(), key=lambda kv: kv[0] == "REPORT.md")}
    return [written[name] for name in OUTPUTS if name in written]


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m ignite_lenet.bench_report",
                            description="Summarise pytest-benchmark JSON files into a Markdown report and charts "
                                        "(CPU and GPU side by side when both were measured).")
    parser.add_argument("json_files", nargs="+", metavar="JSON",
                        help=f"pytest-benchmark --benchmark-json outputs (an optional <name>{NOTE_SUFFIX} beside "
                             "one says in a line what it is)")
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
