"""Spark Connect: no SparkContext on the client, and image_features still works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

# A separate process: a local Connect server starts its own Spark driver, and one process
# can hold only one, which the classic test session already is.
SCRIPT = textwrap.dedent(
    """
    import sys
    from pyspark.sql import SparkSession
    import featurex as fx

    spark = SparkSession.builder.remote("local[2]").getOrCreate()
    assert type(spark).__module__.startswith("pyspark.sql.connect"), type(spark)
    files = spark.read.format("binaryFile").load(sys.argv[1])
    col = fx.image_features("content", model="resnet18", weights=None, with_errors=True)
    rows = files.select("path", col.alias("r")).orderBy("path").collect()
    print("ROWS", len(rows), sorted({len(r["r"]["features"]) for r in rows}),
          sum(r["r"]["error"] is not None for r in rows))
    spark.stop()
    """
)


@pytest.mark.slow
def test_image_features_under_spark_connect(tmp_path: Path) -> None:
    script = tmp_path / "connect_job.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    result = subprocess.run(
        [sys.executable, str(script), str(ROOT / "samples")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ROWS 6 [512] 0" in result.stdout
