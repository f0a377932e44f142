"""``benchmarks/oip_load.py`` runs once, quickly, in a plain ``pytest`` so that it cannot rot; numbers are not asserted
(docs/serving.md has the figures and how they were taken)."""

import oip_load


def test_the_oip_load_benchmark_runs_and_nothing_fails(exported, mnist_dir, capsys):
    code = oip_load.main(["--smoke", "--model", str(exported.files["onnx"]), "--data-dir", str(mnist_dir)])
    out = capsys.readouterr().out
    assert code == 0, out  # 0: no request failed in any scenario
    assert "oip_binary_b16" in out and "oip_json_b1" in out
