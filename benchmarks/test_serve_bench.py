"""The serving benchmarks run once, quickly, in a plain ``pytest`` so they cannot rot; numbers are not asserted.

The measurements themselves: ``python benchmarks/serve_load.py`` and ``python benchmarks/serve_stages.py``
(docs/serving.md has the figures and how they were taken).
"""

import serve_load
import serve_stages


def test_the_load_benchmark_runs_and_nothing_fails(exported, mnist_dir, capsys):
    code = serve_load.main(["--smoke", "--model", str(exported.files["onnx"]), "--data-dir", str(mnist_dir)])
    out = capsys.readouterr().out
    assert code == 0, out  # 0: no request failed in any scenario
    assert "predict_vs_healthz@2" in out and "torch imported: False" in out


def test_the_stage_benchmark_runs(exported, mnist_dir, capsys):
    assert serve_stages.main(["--model", str(exported.files["onnx"]), "--data-dir", str(mnist_dir), "--calls", "20",
                              "--requests", "50"]) == 0
    out = capsys.readouterr().out
    assert '"onnxruntime_run"' in out and '"predict_minus_healthz_p50_us"' in out
