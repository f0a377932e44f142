"""``python -m ignite_lenet.bench_report`` on the benchmark JSON measured on this project's CPU machine."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ignite_lenet.bench_report import load_rows, main, write_report

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
MEASURED = sorted(RESULTS.glob("*.json"))


@pytest.fixture()
def measured(tmp_path):
    if not MEASURED:
        pytest.skip("no benchmark JSON committed under benchmarks/results/")
    for path in MEASURED:
        shutil.copy(path, tmp_path / path.name)
    return sorted(tmp_path.glob("*.json"))


def test_report_tables_and_charts(measured, tmp_path):
    written = write_report(measured, tmp_path / "out")
    assert [p.name for p in written] == ["REPORT.md", "throughput.png", "latency.png"]
    text = (tmp_path / "out" / "REPORT.md").read_text()
    rows = load_rows(measured)
    for engine in {r.engine for r in rows}:
        assert f"| {engine} |" in text
    # eager is the baseline of its device/batch/threads group; the others' speed-up is the latency ratio
    lines = text.splitlines()
    assert all(line.endswith("| 1.00x |") for line in lines if "| eager |" in line)
    for r in rows:
        if r.kind == "inference" and r.engine == "onnxruntime":
            eager = next(e for e in rows if e.engine == "eager" and (e.device, e.batch_size, e.threads) ==
                         (r.device, r.batch_size, r.threads))
            row = f"| {r.device} | {r.batch_size} | {r.threads} | onnxruntime |"
            line = next(line for line in lines if row in line)
            assert line.endswith(f"| {eager.median_s / r.median_s:.2f}x |") and f"{r.images_per_s:,.0f}" in line
    for png in written[1:]:
        with Image.open(png) as image:
            assert image.format == "PNG"


def test_images_per_second_is_batch_over_median(measured):
    data = json.loads(measured[0].read_text())
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if "images_per_s" in info:
            assert info["images_per_s"] == pytest.approx(info["images_per_round"] / bench["stats"]["median"])


def test_training_rows_give_each_pipeline_and_the_ratios(measured, tmp_path):
    rows = [r for r in load_rows(measured) if r.kind == "training"]
    assert {r.engine for r in rows} == {"notebook", "memory-plain-model", "memory-plain-loop", "ignite"}
    write_report(measured, tmp_path)
    lines = (tmp_path / "REPORT.md").read_text().splitlines()
    for r in rows:
        notebook = next(n for n in rows if n.engine == "notebook" and n.batch_size == r.batch_size)
        line = next(line for line in lines if f"| {r.batch_size} | {r.engine} |" in line)
        assert f"| {r.images_per_s / notebook.images_per_s:.2f}x |" in line


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "not.json").write_text("{}")
    assert main([str(tmp_path / "not.json")]) == 2
    assert "not a pytest-benchmark JSON file" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
