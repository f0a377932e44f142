"""The benchmark charts: inference throughput and latency against batch size, CPU and GPU side by side."""

from __future__ import annotations

import io

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ignite_lenet.plots import new_figure
from ignite_lenet.report.results import Row, Source, is_gpu
from ignite_lenet.report.tables import ENGINE_ORDER, fastest_rows, rank

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


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()
