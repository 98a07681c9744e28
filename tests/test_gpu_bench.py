"""scripts/gpu_bench.py runs on CPU too (tiny sizes): the embedding table and the training step."""

from __future__ import annotations

import json

from scripts import gpu_bench


def test_gpu_bench_on_cpu_reports_embedding_and_training(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu_bench.main(["--device", "cpu", "--n", "48", "--batch-sizes", "8,16", "--dtypes", "fp32",
                           "--train-steps", "2", "--train-batch", "8", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result == json.loads(capsys.readouterr().out)
    assert [r["batch_size"] for r in result["results"]] == [8, 16]
    assert min(r["min_cosine_vs_first"] for r in result["results"]) > 0.9999
    assert [t["train_layers"] for t in result["training"]] == ["2", "all"]
    assert all(t["steps"] == 2 and t["device"] == "cpu" and t["pairs_per_s"] > 0 for t in result["training"])
    assert result["training"][0]["frozen_layers_cached"] and not result["training"][1]["frozen_layers_cached"]
