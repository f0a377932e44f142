"""Read and check pytest-benchmark JSON files: one ``Source`` per file (a machine measured in one run), one
``Row`` per measurement, with the optional ``<name>.note.txt`` beside it. A bad input is a ``ValueError`` (or
``OSError``) naming the file and what is wrong."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("inference", "training")
NOTE_SUFFIX = ".note.txt"


def is_gpu(device: str) -> bool:
    """Whether a row's ``device`` is a GPU (``cuda``, ``cuda:1``...)."""
    return device.startswith("cuda")


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
    ips = _positive(info["images_per_s"], "extra_info.images_per_s")
    hardware = info.get("gpu") if is_gpu(device) else info.get("cpu")
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
        for name, rate in per_pipeline.items():
            rate = _positive(rate, f"extra_info.pipelines_images_per_s[{name!r}]")
            rows.append(Row(engine=_text(name, "a pipeline name"), median_s=images / rate, images_per_s=rate,
                            **common))
        return rows
    stats = bench.get("stats")
    if not isinstance(stats, dict):
        shown = "missing or null" if stats is None else _kind_of(stats)
        raise _Problem(f"stats is {shown}, not an object (was it run with --benchmark-only?)")
    median = _positive(stats.get("median"), "stats.median (seconds)")
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
