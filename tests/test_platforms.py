"""featurex on the pyspark that runs this suite: 4.x (`make test`) or 3.5 (`make test-spark35`).

The Python workers run the driver's pyspark; a model is loaded only for rows; a job that
fails while another task is loading its model leaves the Python workers usable; and a Spark
Connect column is accepted whatever pyspark builds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from images import jpeg
from models_for_tests import LoggedBuild, library_versions, tiny_engine
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import featurex as fx

ROOT = Path(__file__).parents[1]


def test_the_python_workers_run_the_drivers_pyspark(spark: SparkSession) -> None:
    # make test-spark35's environment shadows .venv's pyspark 4 with its own 3.5: the
    # daemon and workers Spark starts must see the same one as the driver.
    def report(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        line = json.dumps(library_versions())
        for batch in batches:
            yield pd.DataFrame({"versions": [line] * len(batch)})

    rows = spark.range(0, 8, numPartitions=4).mapInPandas(report, "versions string").collect()
    assert {r["versions"] for r in rows} == {json.dumps(library_versions())}


def test_a_model_is_loaded_only_for_rows_after_their_type_is_checked(
    spark: SparkSession, image_dir: Path, tmp_path: Path
) -> None:
    factory = LoggedBuild(str(tmp_path / "builds.log"))
    files = spark.read.format("binaryFile").load(str(image_dir)).select("content")
    col = fx.image_features("content", **tiny_engine(model=factory))
    # Partitions with no rows (a filter that keeps nothing) load nothing.
    assert files.where("length(content) < 0").select(col).collect() == []
    assert factory.builds() == []
    # A column of the wrong type fails on its first batch, before any model is built.
    paths = spark.createDataFrame([("/data/a.jpg",), ("/data/b.jpg",)], "content string")
    bytes_only = fx.image_features("content", input_type="bytes", **tiny_engine(model=factory))
    with pytest.raises(Exception, match=r"expects binary image bytes .* holds string"):
        paths.select(bytes_only).collect()
    assert factory.builds() == []
    # So does one whose first Arrow batch holds only a null: the type shows in the next.
    late = spark.createDataFrame([(None,), ("/data/a.jpg",)], "content string").coalesce(1)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "1")
    try:
        with pytest.raises(Exception, match=r"expects binary image bytes .* holds string"):
            late.select(bytes_only).collect()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert factory.builds() == []
    # Rows do load it: the log records builds.
    assert len(files.limit(2).select(col).collect()) == 2
    assert factory.builds() != []


@pytest.mark.slow
def test_a_killed_task_leaves_no_dead_python_worker_in_the_pool(spark: SparkSession) -> None:
    # Two tasks run featurex on two rows each; its Python worker goes back to Spark's reuse
    # pool once the sort has read all its output. Then the JVM sleeps: task 0 for 12 s on a
    # row, task 1 for 4 s before it fails the job, so Spark kills task 0 in its sleep. With
    # pyspark 3.5's default spark.python.task.killTimeout (2 s), Spark destroyed task 0's
    # Python worker, already in the pool, within 4 s of the kill, and the next task to take
    # it failed with "SocketException: Socket is closed" (tests/conftest.py says why). With
    # 60 s, task 0 ends first and nothing is destroyed.
    features = fx.image_features("content", **tiny_engine(seed=uuid.uuid4().int % 1000))
    millis = "case id when 0 then 12000 when 3 then 4000 else 0 end"
    sleep = f"reflect('java.lang.Thread', 'sleep', bigint({millis}))"  # returns 'null'
    then_fail = f"if({sleep} is not null and id = 3, raise_error('task 1 fails'), 'slept')"
    rows = spark.range(4, numPartitions=2).select("id", F.lit(jpeg()).alias("content"))
    # Warm workers (torch imported, the model cached): both tasks are through featurex in
    # well under 4 s, whatever the machine's load.
    assert len(rows.select(features).collect()) == 4
    job = rows.select("id", features.alias("f")).sortWithinPartitions(F.desc("id"))
    with pytest.raises(Exception, match="task 1 fails"):
        job.select("id", "f", F.expr(then_fail)).collect()
    # Spark's monitor looks every 2 s, then waits the kill timeout: past that, jobs that
    # take Python workers from the pool all run.
    time.sleep(6)
    for _ in range(3):
        assert len(rows.select(features).collect()) == 4


CONNECT_CLIENT_API = textwrap.dedent(
    """
    import sys
    from pyspark.sql.connect.functions import col

    import featurex as fx
    from featurex.ml import to_vector

    # Column objects of the Connect client, and featurex's Columns built from them: the plan
    # a client sends. No server is needed to build it.
    features = fx.image_features(col("content"), model="resnet18", weights=None,
                                 with_errors=True, path_col=col("path"))
    vector = to_vector(fx.image_features("content", model="resnet18", weights=None))
    print(type(features).__module__, repr(features), repr(vector), sep="\\n")
    """
)


def test_a_spark_connect_column_is_accepted_by_this_pyspark() -> None:
    # On 3.5 a Connect column is not a pyspark.sql.Column (on 4.x it is): featurex accepts
    # both. In a process of its own: Connect mode is process-wide.
    env = {**os.environ, "SPARK_CONNECT_MODE_ENABLED": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", CONNECT_CLIENT_API], capture_output=True,
                            text=True, timeout=300, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    module, features, vector = result.stdout.splitlines()[-3:]
    assert module == "pyspark.sql.connect.column"
    assert features == "Column<'features_and_errors(content, path)'>"
    assert "array_to_vector(features_only(content))" in vector
