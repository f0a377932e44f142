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
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .artifacts import atomic_write
from .cli import ArgumentParser, run_cli
from .plots import new_figure

ENGINE_ORDER = ("eager", "torchscript", "torch-export", "torch-compile", "cuda-graph", "onnxruntime",
                "onnxruntime-int8")
PIPELINE_ORDER = ("notebook", "memory-plain-model", "memory-plain-loop", "ignite", "plain-cuda-graph", "ignite-cuda-graph")
KINDS = ("inference", "training")
NOTE_SUFFIX = ".note.txt"
OUTPUTS = ("REPORT.md", "throughput.png", "latency.png")


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


@dataclass
class Source:
    """One input file: a machine measured in one run, and what it is (commit, date, an optional note)."""

    name: str  # the file name without ".json": the machine column of the tables
    path: Path
    rows: list[Row]
    commit: str = ""
    date: str = ""
    note: str = ""
    hardware: dict[str, str] = field(default_factory=dict)  # device -> "AMD EPYC, 2 threads", "NVIDIA H200"

    def describe(self) -> str:
        """The note if there is one, else commit and date from the JSON (``""`` when it records neither)."""
        return self.note or ", ".join(part for part in (self.commit, self.date) if part)


class _Problem(ValueError):
    """What is wrong inside one benchmark entry; ``load_source`` adds the file and the entry's name."""


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    for types, name in ((bool, "a boolean"), (dict, "an object"), (list, "a list"), (str, "a string"),
                        ((int, float), "a number")):
        if isinstance(value, types):
            return name
    return type(value).__name__


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else _kind_of(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Problem(f"{what} is {_show(value) if value is not None else 'missing or null'}, not a number")
    if not math.isfinite(value) or value <= 0:
        raise _Problem(f"{what} is {_show(value)}; it must be a positive finite number")
    return float(value)


def _integer(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        shown = _show(value) if value is not None else "missing or null"
        raise _Problem(f"{what} is {shown}; it must be an integer >= {minimum}")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Problem(f"{what} is {_show(value) if value is not None else 'missing or null'}, not a name")
    return value


def _rows_of(bench: Any, machine: str) -> list[Row]:
    """The rows of one pytest-benchmark entry ([] for entries that are not this project's measurements)."""
    if not isinstance(bench, dict):
        raise _Problem(f"is {_kind_of(bench)}, not an object")
    info = bench.get("extra_info", {})
    if not isinstance(info, dict):
        raise _Problem(f"extra_info is {_kind_of(info)}, not an object")
    if "kind" not in info or "images_per_s" not in info:
        return []  # another project's benchmark, or one run without measuring (no --benchmark-only)
    kind = info["kind"]
    if kind not in KINDS:
        raise _Problem(f"extra_info.kind is {_show(kind)}; expected one of {', '.join(KINDS)}")
    device = _text(info.get("device"), "extra_info.device")
    batch_size = _integer(info.get("batch_size"), "extra_info.batch_size", 1)
    threads = _integer(info.get("threads", info.get("torch_threads", 0)), "extra_info.threads", 0)
    _positive(info["images_per_s"], "extra_info.images_per_s")
    hardware = info.get("gpu") if device.startswith("cuda") else info.get("cpu")
    common = dict(machine=machine, kind=kind, device=device, batch_size=batch_size, threads=threads,
                  hardware=str(hardware) if hardware else "unknown")
    if "pipelines_images_per_s" in info:  # training rounds time several pipelines in turn: one row each
        per_pipeline = info["pipelines_images_per_s"]
        if not isinstance(per_pipeline, dict):
            raise _Problem(f"extra_info.pipelines_images_per_s is {_kind_of(per_pipeline)}, not an object of "
                           "images/s per pipeline")
        if not per_pipeline:
            raise _Problem("extra_info.pipelines_images_per_s is empty")
        images = _positive(info.get("images_per_round"), "extra_info.images_per_round") / len(per_pipeline)
        rows = []
        for name, ips in per_pipeline.items():
            ips = _positive(ips, f"extra_info.pipelines_images_per_s[{name!r}]")
            rows.append(Row(engine=_text(name, "a pipeline name"), median_s=images / ips, images_per_s=ips,
                            **common))
        return rows
    stats = bench.get("stats")
    if not isinstance(stats, dict):
        shown = "missing or null" if stats is None else _kind_of(stats)
        raise _Problem(f"stats is {shown}, not an object (was it run with --benchmark-only?)")
    median = _positive(stats.get("median"), "stats.median (seconds)")
    ips = _positive(info["images_per_s"], "extra_info.images_per_s")
    return [Row(engine=_text(info.get("engine"), "extra_info.engine"), median_s=median, images_per_s=ips,
                **common)]


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, not a pytest-benchmark JSON file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise OSError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not raw.strip():
        raise ValueError(f"{path}: empty file, not a pytest-benchmark JSON file")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text, not a pytest-benchmark JSON file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to be a pytest-benchmark file") from None


def _read_note(path: Path) -> str:
    note = path.with_name(path.stem + NOTE_SUFFIX)
    if not note.exists():
        return ""
    try:
        text = note.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{note}: not UTF-8 text (the note describing {path.name})") from None
    except OSError as e:
        raise OSError(f"{note}: cannot be read ({e.strerror or e}; the note describing {path.name})") from None
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _commit_and_date(data: dict[str, Any]) -> tuple[str, str]:
    commit = ""
    info = data.get("commit_info")
    if isinstance(info, dict) and isinstance(info.get("id"), str) and info["id"]:
        branch = info.get("branch") if isinstance(info.get("branch"), str) else ""
        commit = f"{branch + ' ' if branch else 'commit '}{info['id'][:7]}"
        if info.get("dirty") is True:
            commit += " with uncommitted changes"
    date = data.get("datetime")
    return commit, date[:10] if isinstance(date, str) else ""


def load_source(path: str | Path) -> Source:
    """One pytest-benchmark JSON file, checked: ``ValueError``/``OSError`` naming the file and what is wrong."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (its top level is {_kind_of(data)}, "
                         "not an object)")
    if "benchmarks" not in data:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list; run pytest with "
                         "--benchmark-json)")
    benchmarks = data["benchmarks"]
    if not isinstance(benchmarks, list):
        raise ValueError(f"{path}: not a pytest-benchmark JSON file ('benchmarks' is {_kind_of(benchmarks)}, "
                         "not a list)")
    rows: list[Row] = []
    seen: dict[tuple[str, str, str, int, int], str] = {}
    for i, bench in enumerate(benchmarks):
        name = bench.get("name") if isinstance(bench, dict) else None
        name = name if isinstance(name, str) and name else f"#{i + 1}"
        try:
            new = _rows_of(bench, path.stem)
        except _Problem as e:
            raise ValueError(f"{path}: benchmark {name}: {e}") from None
        for r in new:
            key = (r.kind, r.engine, r.device, r.batch_size, r.threads)
            if key in seen:
                raise ValueError(f"{path}: {r.kind} of {r.engine} on {r.device} at batch {r.batch_size} "
                                 f"({r.threads} threads) appears twice ({seen[key]} and {name})")
            seen[key] = name
        rows += new
    if not rows:
        raise ValueError(f"{path}: no benchmark with images/s in it (run pytest with --benchmark-only "
                         "--benchmark-json)")
    commit, date = _commit_and_date(data)
    hardware = {}
    for device in sorted({r.device for r in rows}):
        names = sorted({r.hardware for r in rows if r.device == device})
        hardware[device] = " / ".join(names)
        if device == "cpu":
            threads = max(r.threads for r in rows if r.device == device)
            hardware[device] += f", {threads} thread{'s' * (threads != 1)}"
    return Source(path.stem, path, rows, commit, date, _read_note(path), hardware)


def load_sources(paths: Iterable[str | Path]) -> list[Source]:
    """Every file of ``paths`` through ``load_source``; two inputs with the same name are refused."""
    sources: list[Source] = []
    for path in paths:
        source = load_source(path)
        twin = next((s for s in sources if s.name == source.name), None)
        if twin is not None:
            if twin.path.resolve() == source.path.resolve():
                raise ValueError(f"{source.path}: given twice")
            raise ValueError(f"{twin.path} and {source.path}: two inputs named {source.name!r} (the file name "
                             "names the machine in the report; rename one)")
        sources.append(source)
    if not sources:
        raise ValueError("no input files")
    return sources


def load_rows(paths: Iterable[str | Path]) -> list[Row]:
    """The rows of every file (see ``load_source`` for what is checked)."""
    return [row for source in load_sources(paths) for row in source.rows]


def _order(value: str, order: tuple[str, ...]) -> int:
    return order.index(value) if value in order else len(order)


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def _fmt_ratio(x: float) -> str:
    return f"{x:,.0f}x" if x >= 100 else f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def _is_gpu(device: str) -> bool:
    return device.startswith("cuda")


def inference_table(rows: list[Row]) -> list[str]:
    """Every inference row, with its speed-up over eager PyTorch on the same machine, device, batch, threads."""
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
    """Every training row, with its ratio to the notebook's pipeline and, for Ignite, to the plain loops."""
    rows = sorted((r for r in rows if r.kind == "training"),
                  key=lambda r: (r.machine, r.device, r.batch_size, _order(r.engine, PIPELINE_ORDER)))
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
    gpus = sorted({r.machine for r in rows if _is_gpu(r.device)})
    return [(c, g) for c in cpus for g in gpus]


def _fastest(rows: Iterable[Row]) -> dict[tuple[str, int], tuple[Row, bool]]:
    """(engine, batch) -> (fastest row over thread settings, whether several settings were measured)."""
    groups: dict[tuple[str, int], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r.engine, r.batch_size)].append(r)
    return {key: (max(group, key=lambda r: r.images_per_s), len(group) > 1) for key, group in groups.items()}


def _pick(rows: list[Row], kind: str, machine: str, gpu: bool) -> dict[tuple[str, int], tuple[Row, bool]]:
    return _fastest(r for r in rows if r.kind == kind and r.machine == machine and _is_gpu(r.device) == gpu)


def _rate_of(entry: tuple[Row, bool]) -> float:
    return entry[0].images_per_s


def _cell(entry: tuple[Row, bool] | None, value: str, engine: bool = False) -> str:
    if entry is None:
        return "–"
    row, several = entry
    notes = ([row.engine] if engine else []) + ([f"{row.threads} thread{'s' * (row.threads != 1)}"] if several else [])
    return f"{value} ({', '.join(notes)})" if notes else value


def side_by_side_table(rows: list[Row], cpu: str, gpu: str, kind: str = "inference") -> list[str]:
    """Engine (or pipeline) x batch: CPU images/s, GPU images/s, GPU/CPU; per batch, the best of each device."""
    order = ENGINE_ORDER if kind == "inference" else PIPELINE_ORDER
    on_cpu, on_gpu = _pick(rows, kind, cpu, False), _pick(rows, kind, gpu, True)
    label = "engine" if kind == "inference" else "pipeline"
    lines = [f"| {label} | batch | CPU images/s | GPU images/s | GPU/CPU |", "|---|---:|---:|---:|---:|"]
    for batch in sorted({b for _, b in on_cpu} | {b for _, b in on_gpu}):
        engines = sorted({e for e, b in [*on_cpu, *on_gpu] if b == batch}, key=lambda e: (_order(e, order), e))
        for engine in engines:
            c, g = on_cpu.get((engine, batch)), on_gpu.get((engine, batch))
            ratio = _fmt_ratio(g[0].images_per_s / c[0].images_per_s) if c and g else "–"
            lines.append(f"| {engine} | {batch} | {_cell(c, _fmt_rate(c[0].images_per_s)) if c else '–'} | "
                         f"{_cell(g, _fmt_rate(g[0].images_per_s)) if g else '–'} | {ratio} |")
        best_c = max((v for (_, b), v in on_cpu.items() if b == batch), key=_rate_of, default=None)
        best_g = max((v for (_, b), v in on_gpu.items() if b == batch), key=_rate_of, default=None)
        if best_c and best_g and len(engines) > 1:
            cells = (f"**{_cell(best, _fmt_rate(best[0].images_per_s), True)}**" for best in (best_c, best_g))
            ratio = _fmt_ratio(best_g[0].images_per_s / best_c[0].images_per_s)
            lines.append(f"| **best of each** | **{batch}** | {' | '.join(cells)} | **{ratio}** |")
    return lines


def latency_side_by_side_table(rows: list[Row], cpu: str, gpu: str) -> list[str]:
    """Batch-1 median latency per engine on the CPU (its fastest thread setting) and the GPU, and the speed-up."""
    on_cpu, on_gpu = _pick(rows, "inference", cpu, False), _pick(rows, "inference", gpu, True)
    engines = sorted({e for e, b in [*on_cpu, *on_gpu] if b == 1}, key=lambda e: (_order(e, ENGINE_ORDER), e))
    lines = ["| engine | CPU batch-1 latency | GPU batch-1 latency | GPU speed-up |", "|---|---:|---:|---:|"]
    for engine in engines:
        c, g = on_cpu.get((engine, 1)), on_gpu.get((engine, 1))
        ratio = _fmt_ratio(c[0].median_s / g[0].median_s) if c and g else "–"
        lines.append(f"| {engine} | {_cell(c, _fmt_time(c[0].median_s)) if c else '–'} | "
                     f"{_cell(g, _fmt_time(g[0].median_s)) if g else '–'} | {ratio} |")
    return lines


CPU_BAR_COLORS = ("#6baed6", "#2171b5", "#08306b", "#9ecae1")
GPU_BAR_COLORS = ("#fd8d3c", "#d94801", "#fdae6b", "#7f2704")
ENGINE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                 "tab:gray", "tab:olive", "tab:cyan")


def _engine_color(engine: str) -> str:
    i = _order(engine, ENGINE_ORDER)
    return ENGINE_COLORS[i] if i < len(ENGINE_ORDER) else "black"


def _series_label(sources: dict[str, Source], machine: str, device: str) -> str:
    hardware = sources[machine].hardware.get(device, "") if machine in sources else ""
    return f"{'GPU' if _is_gpu(device) else 'CPU'}: {hardware.split(',')[0] or device} ({machine})"


def throughput_figure(rows: list[Row], sources: dict[str, Source] | None = None) -> Figure:
    """Inference images/s against batch size (log-log): colour per engine, line style per machine and device."""
    sources = sources or {}
    fig, ax = new_figure((9, 5.5))
    inference = [r for r in rows if r.kind == "inference"]
    keys = sorted({(r.machine, r.device) for r in inference}, key=lambda k: (_is_gpu(k[1]), k))
    styles = dict(zip(keys, ["-", "--", ":", "-."] * (len(keys) // 4 + 1)))
    for machine, device in keys:
        fastest = _fastest(r for r in inference if (r.machine, r.device) == (machine, device))
        for engine in sorted({e for e, _ in fastest}, key=lambda e: (_order(e, ENGINE_ORDER), e)):
            points = sorted((row for (e, _), (row, _) in fastest.items() if e == engine), key=lambda r: r.batch_size)
            ax.plot([p.batch_size for p in points], [p.images_per_s for p in points], styles[(machine, device)],
                    marker="s" if _is_gpu(device) else "o", ms=4, color=_engine_color(engine))
    engines = sorted({r.engine for r in inference}, key=lambda e: (_order(e, ENGINE_ORDER), e))
    first = ax.legend([Line2D([], [], color=_engine_color(e), marker="o", ms=4) for e in engines], engines,
                      title="engine", fontsize=8, loc="upper left")
    ax.add_artist(first)
    ax.legend([Line2D([], [], color="black", ls=styles[k], marker="s" if _is_gpu(k[1]) else "o", ms=4) for k in keys],
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
    groups = sorted({(r.machine, r.device, r.threads) for r in batch1}, key=lambda g: (_is_gpu(g[1]), g))
    engines = sorted({r.engine for r in batch1}, key=lambda e: (_order(e, ENGINE_ORDER), e))
    width = 0.8 / max(len(groups), 1)
    counts = {False: 0, True: 0}
    for g, (machine, device, threads) in enumerate(groups):
        values = {r.engine: r.median_s * 1e6 for r in batch1
                  if (r.machine, r.device, r.threads) == (machine, device, threads)}
        xs = [i + g * width for i, e in enumerate(engines) if e in values]
        palette = GPU_BAR_COLORS if _is_gpu(device) else CPU_BAR_COLORS
        color = palette[counts[_is_gpu(device)] % len(palette)]
        counts[_is_gpu(device)] += 1
        label = _series_label(sources, machine, device)
        if not _is_gpu(device):
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
                      f"{next((h for d, h in by_name[gpu].hardware.items() if _is_gpu(d)), gpu)} ({gpu})"]
            if inference:
                lines += ["", "Inference, images/s:", "", *side_by_side_table(rows, cpu, gpu, "inference"), "",
                          "Batch-1 latency:", "", *latency_side_by_side_table(rows, cpu, gpu)]
            if any(r.kind == "training" and r.device == "cpu" for r in rows if r.machine == cpu) and any(
                    r.kind == "training" and _is_gpu(r.device) for r in rows if r.machine == gpu):
                lines += ["", "Training, images/s:", "", *side_by_side_table(rows, cpu, gpu, "training")]
    if inference:
        lines += ["", "## Inference", "", "![throughput](throughput.png)", "", "![latency](latency.png)", "",
                  *inference_table(rows)]
    if any(r.kind == "training" for r in rows):
        lines += ["", "## Training (batches of real MNIST, summed cross-entropy, Adam)", "",
                  "The pipelines take turns inside every timed round (so the host's load falls on all alike); "
                  "images/s from the median of each pipeline's own turns.", "", *training_table(rows)]
    return "\n".join(lines) + "\n"


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
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"{output_dir}: not a directory (where the report goes)")
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
