"""examples/notebook.ipynb executed in a real Jupyter kernel (nbclient + ipykernel) on real MNIST, checked for
what a notebook user sees: the figures as pictures, the progress bar as a widget, no warnings, the numbers."""

import json
import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebook.ipynb"


def _outputs(cell) -> list[dict]:
    return cell.get("outputs", [])


def _text(cell, stream: str | None = None) -> str:
    parts = []
    for out in _outputs(cell):
        if out["output_type"] == "stream" and stream in (None, out["name"]):
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data") and stream is None:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.fixture(scope="module")
def executed(mnist_dir, tmp_path_factory):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    work = tmp_path_factory.mktemp("notebook")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    env = {"IGNITE_LENET_DATA_DIR": str(mnist_dir), "NOTEBOOK_EPOCHS": "1", "NOTEBOOK_EPOCH_LENGTH": "200"}
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                         resources={"metadata": {"path": str(work)}})
        client.execute()
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return notebook, work


def _cell(notebook, source_start: str):
    return next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(source_start))


def test_every_cell_runs_and_nothing_warns(executed):
    notebook, _ = executed
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        assert not [o for o in _outputs(cell) if o["output_type"] == "error"], cell.source
        stderr = _text(cell, "stderr")
        assert "Warning" not in stderr and "Traceback" not in stderr, f"{cell.source[:60]!r}: {stderr}"


def test_figures_show_as_pictures_without_a_magic(executed):
    notebook, _ = executed
    assert "%matplotlib" not in "".join(c.source for c in notebook.cells)
    for start in ("from ignite_lenet.mnist.idx", "result.plot()"):
        cell = _cell(notebook, start)
        results = [o for o in _outputs(cell) if o["output_type"] == "execute_result"]
        assert results and "image/png" in results[0]["data"], f"{start}: {[list(o.get('data', {})) for o in results]}"


def test_the_progress_bar_is_a_widget_and_the_run_reports_its_accuracy(executed):
    notebook, work = executed
    cell = _cell(notebook, "from ignite_lenet import TrainConfig")
    kinds = {mime for o in _outputs(cell) if o["output_type"] == "display_data" for mime in o["data"]}
    assert "application/vnd.jupyter.widget-view+json" in kinds
    assert "test accuracy" in _text(cell, "stdout")
    summary = _text(_cell(notebook, "from ignite_lenet.model import model_summary"), "stdout")
    assert "Total params: 61,706" in summary and "Total mult-adds (M)" in summary and "Units." not in summary
    metrics = json.loads((work / "runs" / "notebook" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.85  # 200 steps of the notebook's recipe: about 89%
    onnx_accuracy = float(_text(_cell(notebook, "from ignite_lenet.inference"), "stdout").split("test set: ")[1][:5])
    assert abs(onnx_accuracy - 100 * metrics["test_accuracy"]) < 0.02  # the ONNX export answers as the model did
