"""``REPORT.md``, ``throughput.png`` and ``latency.png`` from pytest-benchmark JSON files, checked before anything
is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ignite_lenet.files import atomic_write, check_output_dir
from ignite_lenet.report.charts import latency_figure, png_bytes, throughput_figure
from ignite_lenet.report.results import Source, load_sources
from ignite_lenet.report.tables import report_markdown

OUTPUTS = ("REPORT.md", "throughput.png", "latency.png")


def render_report(sources: list[Source]) -> dict[str, bytes]:
    """``{file name: contents}`` of the report: ``REPORT.md``, and the two charts when there is inference data."""
    rows = [r for s in sources for r in s.rows]
    outputs = {"REPORT.md": report_markdown(sources).encode()}
    if any(r.kind == "inference" for r in rows):
        by_name = {s.name: s for s in sources}
        outputs["throughput.png"] = png_bytes(throughput_figure(rows, by_name))
        outputs["latency.png"] = png_bytes(latency_figure(rows, by_name))
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
