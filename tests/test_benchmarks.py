"""The benchmark harness runs end to end at a tiny size and writes what the README shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_benchmark_harness_writes_json_markdown_and_chart(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmarks.run", "--images", "8", "--model", "resnet18",
           "--repeats", "1", "--variants", "eager,featurex", "--sweep-sizes", "",
           "--sweep-batches", "", "--subset", "4", "--out", str(out),
           "--data", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["model"] == "resnet18" and results["machine"]["torch"]
    rows = {r["variant"]: r for r in results["variants"]}
    assert set(rows) == {"eager", "featurex"}
    for row in rows.values():
        assert row["images"] == 8 and row["images_per_s"] > 0
        assert row["model_loads"] >= 1 and row["peak_worker_rss_mb"] > 100
        assert row["max_rel_dev"] < 1e-4 and row["min_cosine"] > 0.9999  # same function
    assert rows["featurex"]["ratio_to_featurex"] == 1.0
    assert results["size_sweep"] == [] and results["batch_sweep"] == []
    table = (out / "results.md").read_text()
    assert "| featurex default | " in table and "| eager PyTorch" in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "data" / "n8").glob("*.jpg"))) == 8
