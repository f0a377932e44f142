"""``python -m ignite_lenet.bench_report``: the committed CPU and H200 JSON side by side, and hostile inputs."""

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ignite_lenet.bench_report import main
from ignite_lenet.report.render import write_report
from ignite_lenet.report.results import load_sources

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
MEASURED = sorted(RESULTS.glob("*.json"))
PROG = "python -m ignite_lenet.bench_report"


@pytest.fixture()
def measured(tmp_path):
    if not MEASURED:
        pytest.skip("no benchmark JSON committed under benchmarks/results/")
    for path in MEASURED + sorted(RESULTS.glob("*.note.txt")):
        shutil.copy(path, tmp_path / path.name)
    return sorted(tmp_path.glob("*.json"))


def _line(lines: list[str], *cells: str) -> str:
    """The one table line holding these cells in this order (`| a | b |`)."""
    needle = "| " + " | ".join(cells) + " |"
    found = [line for line in lines if needle in line]
    assert len(found) == 1, (needle, found)
    return found[0]


def test_report_tables_and_charts(measured, tmp_path):
    written = write_report(measured, tmp_path / "out")
    assert [p.name for p in written] == ["REPORT.md", "throughput.png", "latency.png"]
    text = (tmp_path / "out" / "REPORT.md").read_text()
    rows = [r for s in load_sources(measured) for r in s.rows]
    for engine in {r.engine for r in rows}:
        assert f"| {engine} |" in text
    # eager is the baseline of its machine/device/batch/threads group; the others' speed-up is the latency ratio
    lines = text.splitlines()
    assert all(line.endswith("| 1.00x |") for line in lines if "| eager |" in line and line.count("|") == 9)
    for r in rows:
        if r.kind == "inference" and r.engine == "onnxruntime":
            eager = next(e for e in rows if e.engine == "eager" and (e.machine, e.device, e.batch_size, e.threads)
                         == (r.machine, r.device, r.batch_size, r.threads))
            line = _line(lines, r.machine, r.device, str(r.batch_size), str(r.threads), "onnxruntime")
            assert line.endswith(f"| {eager.median_s / r.median_s:.2f}x |") and f"{r.images_per_s:,.0f}" in line
    for png in written[1:]:
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width >= 800


def test_cpu_and_h200_side_by_side(measured, tmp_path):
    """One table engine x batch: CPU images/s (its faster thread setting), GPU images/s, and their ratio."""
    sources = {s.name: s for s in load_sources(measured)}
    if "h200-main-405f264-2026-11-28" not in sources or "cpu-2core-intel-xeon" not in sources:
        pytest.skip("the committed CPU and H200 files are not both there")
    write_report(measured, tmp_path)
    text = (tmp_path / "REPORT.md").read_text()
    lines = text.splitlines()
    # the H200 file is labelled as what it is
    assert "measured on an NVIDIA H200 at main 405f264, 2026-11-28, before the CUDA changes of issue 8" in text
    assert "## CPU and GPU side by side" in text
    cpu = {(r.engine, r.batch_size, r.threads): r
           for r in sources["cpu-2core-intel-xeon"].rows if r.kind == "inference"}
    gpu = {(r.engine, r.batch_size): r for r in sources["h200-main-405f264-2026-11-28"].rows if r.kind == "inference"}
    for (engine, batch), g in gpu.items():
        candidates = [c for (e, b, _), c in cpu.items() if (e, b) == (engine, batch)]
        if not candidates:  # batch 8192 is measured on the GPU only
            line = _line(lines, engine, str(batch), "–", f"{g.images_per_s:,.0f}", "–")
            continue
        c = max(candidates, key=lambda r: r.images_per_s)
        line = _line(lines, engine, str(batch))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[2].startswith(f"{c.images_per_s:,.0f}") and cells[3] == f"{g.images_per_s:,.0f}"
        ratio = g.images_per_s / c.images_per_s
        assert cells[4] == (f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x")
    def fastest(engine: str, batch: int):
        return max((c for (e, b, _), c in cpu.items() if (e, b) == (engine, batch)), key=lambda r: r.images_per_s)

    def threads(r) -> str:
        return f"{r.threads} thread{'s' if r.threads > 1 else ''}"

    # at batch 1 the cell names the CPU's faster thread setting
    c = fastest("eager", 1)
    assert _line(lines, "eager", "1").split("|")[3].strip() == f"{c.images_per_s:,.0f} ({threads(c)})"
    # batch-1 latency side by side: the speed-up is the ratio of the latencies
    g, c = gpu[("torchscript", 1)], fastest("torchscript", 1)
    line = _line(lines, "torchscript", f"{c.median_s * 1e6:,.1f} µs ({threads(c)})", f"{g.median_s * 1e6:,.1f} µs")
    assert line.endswith(f"| {c.median_s / g.median_s:.2f}x |")
    # per batch, the best engine of each device
    best = max((c for (e, b, _), c in cpu.items() if b == 1024), key=lambda r: r.images_per_s)
    assert best.engine in _line(lines, "**best of each**", "**1024**")
    # the training pipelines too
    assert _line(lines, "ignite", "256").endswith("x |")


def test_images_per_second_is_batch_over_median(measured):
    for path in measured:
        for bench in json.loads(path.read_text())["benchmarks"]:
            info = bench["extra_info"]
            if "images_per_s" in info:
                assert info["images_per_s"] == pytest.approx(info["images_per_round"] / bench["stats"]["median"])


def test_training_rows_give_each_pipeline_and_the_ratios(measured, tmp_path):
    rows = [r for r in [r for s in load_sources(measured) for r in s.rows] if r.kind == "training"]
    assert {"notebook", "memory-plain-model", "memory-plain-loop", "ignite"} <= {r.engine for r in rows}
    write_report(measured, tmp_path)
    lines = (tmp_path / "REPORT.md").read_text().splitlines()
    for r in rows:
        notebook = next(n for n in rows if n.engine == "notebook" and (n.machine, n.device, n.batch_size) ==
                        (r.machine, r.device, r.batch_size))
        line = _line(lines, r.machine, r.device, str(r.batch_size), r.engine)
        assert f"| {r.images_per_s / notebook.images_per_s:.2f}x |" in line


def test_a_note_beside_a_file_labels_it(tmp_path):
    _write(tmp_path / "gpu-box.json", _valid(device="cuda"))
    (tmp_path / "gpu-box.note.txt").write_text("\nmeasured on a test GPU at abc1234, 2030-01-01\nsecond line\n")
    _write(tmp_path / "cpu-box.json", _valid())
    write_report([tmp_path / "cpu-box.json", tmp_path / "gpu-box.json"], tmp_path / "out")
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "| gpu-box | cuda | Test GPU | measured on a test GPU at abc1234, 2030-01-01 |" in text
    assert "| cpu-box | cpu | Test CPU, 2 threads | main 1234567, 2030-01-02 |" in text
    assert "second line" not in text



def test_a_graphed_trainer_is_compared_with_the_plain_cuda_graph(tmp_path):
    data = _valid(device="cuda")
    data["benchmarks"][2]["extra_info"]["pipelines_images_per_s"] = {
        "notebook": 5_000.0, "memory-plain-loop": 16_000.0, "ignite": 15_000.0, "plain-cuda-graph": 120_000.0,
        "ignite-cuda-graph": 105_000.0}
    write_report([_write(tmp_path / "gpu.json", data)], tmp_path)
    lines = (tmp_path / "REPORT.md").read_text().splitlines()
    assert _line(lines, "gpu", "cuda", "32", "ignite-cuda-graph", "105,000", "21.00x", "", "0.88x")
    assert _line(lines, "gpu", "cuda", "32", "ignite", "15,000", "3.00x", "0.94x", "0.12x")
    assert _line(lines, "gpu", "cuda", "32", "plain-cuda-graph", "120,000", "24.00x", "", "")

# --- hostile inputs (issue 9): every one is exit 2, one line naming the file, nothing written -------------------

def _bench(engine="eager", device="cpu", batch=1, threads=1, median=0.001):
    return {"name": f"test_inference[{engine}-{device}-b{batch}-t{threads}]",
            "stats": {"median": median},
            "extra_info": {"engine": engine, "device": device, "batch_size": batch, "threads": threads,
                           "kind": "inference", "median_s": median, "images_per_s": batch / median,
                           "images_per_round": batch, "cpu": "Test CPU",
                           "gpu": "Test GPU" if device == "cuda" else None}}


def _training(device="cpu", batch=32):
    return {"name": f"test_training_throughput[{batch}-{device}]", "stats": {"median": 1.0},
            "extra_info": {"engine": "interleaved", "device": device, "batch_size": batch, "kind": "training",
                           "images_per_s": 640.0, "images_per_round": 640, "torch_threads": 2, "cpu": "Test CPU",
                           "gpu": "Test GPU" if device == "cuda" else None,
                           "pipelines_images_per_s": {"notebook": 500.0, "ignite": 900.0}}}


def _valid(device="cpu"):
    return {"commit_info": {"id": "1234567890", "branch": "main", "dirty": False}, "datetime": "2030-01-02T03:04:05",
            "benchmarks": [_bench(device=device), _bench(device=device, batch=64), _training(device)]}


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def _mutated(edit):
    data = copy.deepcopy(_valid())
    edit(data)
    return data


def _set(where, key, value):
    """An edit that sets (or with ``...``, deletes) ``key`` in the part ``where(data)`` of the valid file."""
    def edit(data):
        part = where(data)
        if value is ...:
            del part[key]
        else:
            part[key] = value
    return edit


INFO = lambda d: d["benchmarks"][0]["extra_info"]  # noqa: E731 - short selectors for the table below
STATS = lambda d: d["benchmarks"][0]["stats"]  # noqa: E731
TRAIN = lambda d: d["benchmarks"][2]["extra_info"]  # noqa: E731
TOP = lambda d: d  # noqa: E731

# (id, file contents: bytes, a JSON-able object or an edit of the valid file, words the error must contain)
HOSTILE = [
    ("empty-file", b"", "empty file"),
    ("whitespace-only", b"  \n\t\n", "empty file"),
    ("not-json", b"hello, world\n", "not valid JSON"),
    ("truncated-json", json.dumps(_valid()).encode()[:200], "not valid JSON"),
    ("binary-garbage", bytes(range(256)) * 4, "not UTF-8"),
    ("utf16-json", json.dumps(_valid()).encode("utf-16"), "not UTF-8"),
    ("deeply-nested", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("top-level-list", [], "top level is a list"),
    ("top-level-string", "benchmarks", "top level is a string"),
    ("top-level-null", None, "top level is null"),
    ("top-level-number", 42, "top level is a number"),
    ("benchmarks-null", {"benchmarks": None}, "'benchmarks' is null"),
    ("benchmarks-missing", {"machine_info": {}}, "no 'benchmarks' list"),
    ("benchmarks-object", {"benchmarks": {}}, "'benchmarks' is an object"),
    ("benchmarks-string", {"benchmarks": "x"}, "'benchmarks' is a string"),
    ("benchmarks-empty", {"benchmarks": []}, "no benchmark with images/s"),
    ("benchmarks-nan", {"benchmarks": float("nan")}, "'benchmarks' is a number"),
    ("entry-number", {"benchmarks": [3]}, "benchmark #1: is a number"),
    ("entry-null", {"benchmarks": [None]}, "benchmark #1: is null"),
    ("no-measured-entry", {"benchmarks": [{"name": "t", "extra_info": {"kind": "inference"}}]}, "no benchmark with"),
    ("extra-info-list", _set(lambda d: d["benchmarks"][0], "extra_info", []), "extra_info is a list"),
    ("extra-info-null", _set(lambda d: d["benchmarks"][0], "extra_info", None), "extra_info is null"),
    ("kind-unknown", _set(INFO, "kind", "sleeping"), "extra_info.kind is 'sleeping'"),
    ("device-missing", _set(INFO, "device", ...), "extra_info.device is missing"),
    ("device-number", _set(INFO, "device", 0), "extra_info.device is 0"),
    ("device-empty", _set(INFO, "device", ""), "extra_info.device is ''"),
    ("batch-missing", _set(INFO, "batch_size", ...), "extra_info.batch_size is missing"),
    ("batch-string", _set(INFO, "batch_size", "64"), "extra_info.batch_size is '64'"),
    ("batch-zero", _set(INFO, "batch_size", 0), "extra_info.batch_size is 0"),
    ("batch-negative", _set(INFO, "batch_size", -8), "extra_info.batch_size is -8"),
    ("batch-fraction", _set(INFO, "batch_size", 1.5), "extra_info.batch_size is 1.5"),
    ("batch-boolean", _set(INFO, "batch_size", True), "extra_info.batch_size is a boolean"),
    ("threads-negative", _set(INFO, "threads", -1), "extra_info.threads is -1"),
    ("engine-missing", _set(INFO, "engine", ...), "extra_info.engine is missing"),
    ("engine-list", _set(INFO, "engine", ["eager"]), "extra_info.engine is a list"),
    ("stats-missing", _set(lambda d: d["benchmarks"][0], "stats", ...), "stats is missing"),
    ("stats-list", _set(lambda d: d["benchmarks"][0], "stats", [1]), "stats is a list"),
    ("median-missing", _set(STATS, "median", ...), "stats.median (seconds) is missing"),
    ("median-zero", _set(STATS, "median", 0), "stats.median (seconds) is 0"),
    ("median-negative", _set(STATS, "median", -0.001), "stats.median (seconds) is -0.001"),
    ("median-nan", _set(STATS, "median", float("nan")), "stats.median (seconds) is nan"),
    ("median-infinite", _set(STATS, "median", float("inf")), "stats.median (seconds) is inf"),
    ("median-string", _set(STATS, "median", "fast"), "stats.median (seconds) is 'fast'"),
    ("rate-zero", _set(INFO, "images_per_s", 0), "extra_info.images_per_s is 0"),
    ("rate-negative", _set(INFO, "images_per_s", -5.0), "extra_info.images_per_s is -5.0"),
    ("rate-nan", _set(INFO, "images_per_s", float("nan")), "extra_info.images_per_s is nan"),
    ("rate-overflow", b'{"benchmarks": [{"name": "x", "stats": {"median": 1}, "extra_info": {"kind": "inference", '
                      b'"engine": "eager", "device": "cpu", "batch_size": 1, "threads": 1, "images_per_s": 1e400}}]}',
     "extra_info.images_per_s is inf"),
    ("rate-null", _set(INFO, "images_per_s", None), "extra_info.images_per_s is missing or null"),
    ("pipelines-null", _set(TRAIN, "pipelines_images_per_s", None), "pipelines_images_per_s is null"),
    ("pipelines-list", _set(TRAIN, "pipelines_images_per_s", [1.0]), "pipelines_images_per_s is a list"),
    ("pipelines-empty", _set(TRAIN, "pipelines_images_per_s", {}), "pipelines_images_per_s is empty"),
    ("pipeline-zero", _set(TRAIN, "pipelines_images_per_s", {"ignite": 0}), "['ignite'] is 0"),
    ("pipeline-nan", _set(TRAIN, "pipelines_images_per_s", {"ignite": float("nan")}), "['ignite'] is nan"),
    ("pipeline-negative", _set(TRAIN, "pipelines_images_per_s", {"ignite": -1}), "['ignite'] is -1"),
    ("images-per-round-missing", _set(TRAIN, "images_per_round", ...), "images_per_round is missing"),
    ("images-per-round-zero", _set(TRAIN, "images_per_round", 0), "images_per_round is 0"),
    ("duplicate-case", lambda d: d["benchmarks"].append(copy.deepcopy(d["benchmarks"][0])), "appears twice"),
]


def _make(tmp_path: Path, contents) -> Path:
    bad = tmp_path / "inputs" / "bad.json"
    bad.parent.mkdir(exist_ok=True)
    if isinstance(contents, bytes):
        bad.write_bytes(contents)
    elif callable(contents):
        _write(bad, _mutated(contents))
    else:
        _write(bad, contents)
    return bad


def _special(tmp_path: Path, case: str) -> tuple[list[str], str, str]:
    """Inputs that are not file contents: (argv, the path the error must name, words it must contain)."""
    inputs = tmp_path / "inputs"
    inputs.mkdir(exist_ok=True)
    good = _write(inputs / "good.json", _valid())
    if case == "missing-file":
        return [str(good), str(inputs / "nope.json")], str(inputs / "nope.json"), "no such file"
    if case == "directory":
        (inputs / "adir.json").mkdir()
        return [str(good), str(inputs / "adir.json")], str(inputs / "adir.json"), "is a directory"
    if case == "fifo":
        os.mkfifo(inputs / "pipe.json")  # reading it would block forever: refused without opening it
        return [str(good), str(inputs / "pipe.json")], str(inputs / "pipe.json"), "not a regular file"
    if case == "same-file-twice":
        return [str(good), str(good)], str(good), "given twice"
    if case == "same-name-twice":
        (inputs / "other").mkdir()
        twin = _write(inputs / "other" / "good.json", _valid())
        return [str(good), str(twin)], str(twin), "two inputs named 'good'"
    if case == "note-not-utf8":
        (inputs / "good.note.txt").write_bytes(b"\xff\xfe\x00bad")
        return [str(good)], str(inputs / "good.note.txt"), "not UTF-8"
    if case == "output-dir-is-a-file":
        (tmp_path / "out").rmdir()
        (tmp_path / "out").write_text("a file")
        return [str(good)], str(tmp_path / "out"), "not a directory"
    raise AssertionError(case)


SPECIAL = ["missing-file", "directory", "fifo", "same-file-twice", "same-name-twice", "note-not-utf8",
           "output-dir-is-a-file"]
# the report tolerates what it does not need: these unusual inputs still give a report
TOLERATED = [
    ("commit-info-string", _set(TOP, "commit_info", "abc")),
    ("datetime-number", _set(TOP, "datetime", 12)),
    ("unknown-keys", _set(TOP, "surprise", {"x": [1, 2]})),
    ("foreign-benchmark", lambda d: d["benchmarks"].append({"name": "other", "stats": {"median": 1}})),
    ("unmeasured-benchmark",
     lambda d: d["benchmarks"].append({"name": "disabled", "extra_info": {"kind": "inference"}})),
    ("unknown-engine", _set(INFO, "engine", "tensorrt")),
]


def _assert_refused(capsys, code: int, path: str, words: str, out: Path, before: dict[str, bytes]) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"{PROG}: error: "), err
    assert path in err and words in err, err
    assert "Traceback" not in err
    # nothing half-written: the output directory is exactly as it was (no new file, no temporary left behind)
    after = {p.name: p.read_bytes() for p in out.iterdir()} if out.is_dir() else {}
    assert after == before


@pytest.mark.parametrize("contents, words", [(c, w) for _, c, w in HOSTILE], ids=[i for i, _, _ in HOSTILE])
def test_hostile_report_inputs_give_one_line_and_exit_2(tmp_path, capsys, contents, words):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = _write(inputs / "good.json", _valid())
    bad = _make(tmp_path, contents)
    out = tmp_path / "out"
    out.mkdir()
    (out / "REPORT.md").write_text("the previous report\n")
    before = {"REPORT.md": b"the previous report\n"}
    code = main([str(good), str(bad), "--output-dir", str(out)])
    _assert_refused(capsys, code, str(bad), words, out, before)


@pytest.mark.parametrize("case", SPECIAL)
def test_hostile_report_paths_give_one_line_and_exit_2(tmp_path, capsys, case):
    out = tmp_path / "out"
    out.mkdir()
    argv, path, words = _special(tmp_path, case)
    before = {p.name: p.read_bytes() for p in out.iterdir()} if out.is_dir() else {}
    code = main([*argv, "--output-dir", str(out)])
    _assert_refused(capsys, code, path, words, out, before)


@pytest.mark.parametrize("edit", [e for _, e in TOLERATED], ids=[i for i, _ in TOLERATED])
def test_unusual_but_usable_inputs_still_give_a_report(tmp_path, capsys, edit):
    path = _write(tmp_path / "box.json", _mutated(edit))
    assert main([str(path), "--output-dir", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["REPORT.md", "latency.png", "throughput.png"]



@pytest.mark.parametrize("named", [None, "5114118e5c0ffee"])
def test_a_tree_without_git_records_the_commit_its_caller_names(tmp_path, named):
    """The GPU machine gets the working tree without ``.git``: pytest-benchmark would record "unversioned"; the
    project's conftest takes the commit from ``IGNITE_LENET_COMMIT`` then (and says where it came from)."""
    import subprocess

    from helpers import PYTHON, python_env

    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_tiny.py").write_text("def test_tiny(benchmark):\n    benchmark(sum, range(10))\n")
    env = python_env()
    env.pop("IGNITE_LENET_COMMIT", None)
    if named:
        env["IGNITE_LENET_COMMIT"] = named
    done = subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tiny.py", "--benchmark-only",
                           "--benchmark-json", "out.json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    info = json.loads((tmp_path / "out.json").read_text())["commit_info"]
    if named:
        assert info["id"] == named and info["dirty"] is None and "IGNITE_LENET_COMMIT" in info["source"]
    else:
        assert info["id"] == "unversioned" and "source" not in info
