"""The Spark path on real local[2] Spark: same features, same rows, one load per worker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from images import jpeg
from models_for_tests import (
    LoggedBuild,
    assert_close,
    batch_probe,
    reference_features,
    tiny_engine,
    worker_cache_report,
)
from pyspark import cloudpickle
from pyspark.sql import DataFrame, SparkSession

import featurex as fx
from featurex.config import ExtractorConfig
from featurex.spark import features_column, features_udf


def _files(spark: SparkSession, image_dir: Path) -> DataFrame:
    return (
        spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(image_dir))
    )


def test_features_from_binaryfile_equal_plain_torchvision(
    spark: SparkSession, image_dir: Path
) -> None:
    df = _files(spark, image_dir).repartition(3)
    out = df.withColumn("features", fx.image_features("content", model="resnet18", weights=None))
    assert dict(out.dtypes)["features"] == "array<float>"
    rows = out.select("path", "content", "features").collect()
    assert len(rows) == 12
    features = np.array([r["features"] for r in rows], dtype=np.float32)
    assert features.shape == (12, 512)
    assert_close(features, reference_features([bytes(r["content"]) for r in rows], "resnet18"))


def test_row_count_and_order_survive_bad_rows_and_tiny_arrow_batches(
    spark: SparkSession,
) -> None:
    good = [jpeg(120, 90, seed=i) for i in range(5)]
    data = [good[0], None, b"junk", good[1], b"", good[2], good[3], b"\x89PNG\r\n\x1a\n", good[4]]
    pdf = pd.DataFrame({"id": range(len(data)), "content": data})
    df = spark.createDataFrame(pdf, "id long, content binary").coalesce(1)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "2")
    try:
        col = fx.image_features("content", model="resnet18", weights=None, batch_size=3,
                                with_errors=True)  # fmt: skip
        rows = df.select("id", col.alias("r")).select("id", "r.features", "r.error").collect()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert [r["id"] for r in rows] == list(range(len(data)))
    failed = [r["id"] for r in rows if r["features"] is None]
    assert failed == [1, 2, 4, 7]
    assert all(rows[i]["error"] for i in failed)
    assert rows[1]["error"] == "null input" and "not an image" in rows[2]["error"]
    assert all(r["error"] is None for r in rows if r["features"] is not None)
    ok = np.array([rows[i]["features"] for i in (0, 3, 5, 6, 8)], dtype=np.float32)
    assert_close(ok, reference_features(good, "resnet18"))


@pytest.mark.parametrize(("arrow_batch", "batch_size"), [(3, 5), (100, 4), (1, 1)])
def test_batch_size_is_honoured_whatever_the_arrow_batch(
    spark: SparkSession, arrow_batch: int, batch_size: int
) -> None:
    data = [jpeg(64, 64, seed=i) for i in range(23)]
    df = spark.createDataFrame(pd.DataFrame({"content": data}), "content binary").coalesce(1)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch))
    try:
        col = fx.image_features("content", model=batch_probe, weights=None, batch_size=batch_size)
        sizes = [r[0][0] for r in df.select(col).collect()]
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    # Every inference batch is full but the last one of the partition.
    full, rest = divmod(len(data), batch_size)
    assert sizes == [float(batch_size)] * (full * batch_size) + [float(rest)] * rest


def test_one_model_load_per_worker_across_two_jobs(spark: SparkSession, image_dir: Path) -> None:
    df = _files(spark, image_dir).repartition(6)
    config = fx.ExtractorConfig(model="resnet18", weights=None, seed=123, batch_size=2)
    col = features_column("content", config)
    for _ in range(2):  # two jobs, 6 tasks each, on at most 2 reused Python workers
        rows = df.withColumn("f", col).select("f").collect()
        assert len(rows) == 12 and all(len(r["f"]) == 512 for r in rows)
    reports = [
        json.loads(r["report"])
        for r in spark.range(0, 16, numPartitions=8)
        .mapInPandas(worker_cache_report(config), "report string")
        .distinct()
        .collect()
    ]
    by_pid = {r["pid"]: r for r in reports}
    assert by_pid, "no worker reported"
    # Each worker process loaded this model at most once, and reused it many times.
    assert all(r["loads"] <= 1 for r in by_pid.values()), by_pid
    assert sum(r["loads"] for r in by_pid.values()) >= 1
    # One lookup per task that found the model (12 tasks), not two.
    assert 6 <= sum(r["hits"] for r in by_pid.values()) <= 12, by_pid
    # After its load, a worker's heap (torch, the model: 100,000s of objects) is frozen, so
    # the gc.collect() pyspark runs after every task walks only what tasks created since.
    for r in by_pid.values():
        if r["loads"]:
            assert r["frozen"] > 100_000 and r["tracked"] < r["frozen"] / 4, r


def test_a_filter_on_the_features_runs_the_model_once(spark: SparkSession, image_dir: Path) -> None:
    # A deterministic UDF is copied below a filter on its output: every image ran twice.
    from pyspark.sql import functions as F

    df = _files(spark, image_dir)
    col = fx.image_features("content", model="resnet18", weights=None, with_errors=True)
    kept = df.withColumn("r", col).where(F.col("r.features").isNotNull())
    selected = df.select("path", col.alias("r")).select("path", "r.*").where("error is null")
    for out in (kept, selected):
        plan = out._jdf.queryExecution().executedPlan().toString()
        assert len(re.findall(r"EvalPython \[", plan)) == 1, plan
    assert kept.count() == selected.count() == df.count()


@pytest.mark.parametrize("with_errors", [False, True])
def test_udf_closure_ships_no_session(spark: SparkSession, with_errors: bool) -> None:
    # What Spark pickles for the workers is the UDF's function: the config, nothing else.
    config = fx.ExtractorConfig(model="resnet18", weights=None)
    udf = features_udf(config, with_errors)
    payload = cloudpickle.dumps(udf.func)
    assert len(payload) < 20_000
    for forbidden in (b"SparkSession", b"SparkContext", b"JavaObject", b"py4j", b"Tensor"):
        assert forbidden not in payload
    cells = [c.cell_contents for c in cloudpickle.loads(payload).__closure__]
    # The config, and plain flags (input type, columns, UDF kind, with_errors): nothing else.
    configs = [c for c in cells if isinstance(c, ExtractorConfig)]
    assert configs == [config], cells
    assert all(type(c) in (str, bool) for c in cells if not isinstance(c, ExtractorConfig)), cells


def test_image_data_source_struct_gives_the_same_features_as_the_bytes(
    spark: SparkSession, tmp_path: Path
) -> None:
    # Spark's image source stores BGR pixels; lossless PNGs make the comparison exact.
    from images import encode, photo
    from PIL import Image

    for i in range(4):
        image = photo(150 + 30 * i, 120 + 10 * i, seed=i)
        if i == 3:
            image = image.convert("L")  # one gray image: Spark gives it 1 channel
        (tmp_path / f"p{i}.png").write_bytes(encode(image, "PNG"))
    col = fx.image_features("image", model="resnet18", weights=None)
    structs = spark.read.format("image").load(str(tmp_path))
    from_struct = {
        Path(r["origin"]).name: r["f"]
        for r in structs.select("image.origin", col.alias("f")).collect()
    }
    files = _files(spark, tmp_path)
    by_bytes = fx.image_features("content", model="resnet18", weights=None)
    from_bytes = {
        Path(r["path"]).name: r["f"] for r in files.select("path", by_bytes.alias("f")).collect()
    }
    assert len(from_struct) == 4 and set(from_struct) == set(from_bytes)
    keys = sorted(from_bytes)
    assert_close(
        np.array([from_struct[k] for k in keys], np.float32),
        np.array([from_bytes[k] for k in keys], np.float32),
        rtol=1e-5,
    )
    assert Image.open(tmp_path / "p3.png").mode == "L"


def test_a_column_of_paths_and_uris_is_read_on_the_executors(
    spark: SparkSession, image_dir: Path, tmp_path: Path
) -> None:
    files = sorted(p for p in image_dir.rglob("*") if p.is_file())[:4]
    spaced = tmp_path / "with space.jpg"
    spaced.write_bytes(jpeg(140, 100, seed=9))
    paths = [str(files[0]), files[1].as_uri(), f"file:{files[2]}", spaced.as_uri(), str(files[3])]
    paths += [str(tmp_path / "missing.jpg")]
    df = spark.createDataFrame([(p,) for p in paths], "path string").coalesce(1)
    col = fx.image_features("path", model="resnet18", weights=None, with_errors=True)
    rows = df.select(col.alias("r")).select("r.features", "r.error").collect()
    assert len(rows) == 6
    assert rows[5]["features"] is None
    assert (
        rows[5]["error"]
        == f"cannot read {str(tmp_path / 'missing.jpg')!r}: No such file or directory"
    )
    contents = [p.read_bytes() for p in (*files[:3], spaced, files[3])]
    assert_close(
        np.array([r["features"] for r in rows[:5]], np.float32),
        reference_features(contents, "resnet18"),
    )


@pytest.mark.parametrize(
    ("schema", "value", "input_type", "message"),
    [
        (
            "x string",
            "/data/cat.jpg",
            "bytes",
            r"\(input_type='bytes'\) expects binary image bytes .* holds string",
        ),
        (
            "x long",
            42,
            "auto",
            r"expects binary image bytes, a string column of paths, or Spark's image struct, but the column holds an integral type",
        ),
        (
            "x binary",
            b"\xff\xd8",
            "path",
            r"\(input_type='path'\) expects a string column of paths or URIs, but the column holds binary",
        ),
    ],
)
def test_a_column_of_the_wrong_type_fails_with_a_clear_message(
    spark: SparkSession, schema: str, value: object, input_type: str, message: str
) -> None:
    df = spark.createDataFrame([(value,)], schema)
    col = fx.image_features("x", model="resnet18", weights=None, input_type=input_type)  # type: ignore[arg-type]
    with pytest.raises(Exception, match=message):
        df.select(col).collect()


def test_input_kind_checks_the_spark_type_on_the_driver(spark: SparkSession) -> None:
    from featurex.errors import ConfigError
    from featurex.spark import input_kind

    images = spark.read.format("image").schema  # the image source's schema, no files needed
    binary = spark.createDataFrame([(b"",)], "c binary").schema["c"].dataType
    assert input_kind(binary) == "bytes"
    assert input_kind(spark.createDataFrame([("",)], "c string").schema["c"].dataType) == "path"
    with pytest.raises(ConfigError, match=r"Spark type bigint: featurex expects binary"):
        input_kind(spark.createDataFrame([(1,)], "c long").schema["c"].dataType)
    with pytest.raises(
        ConfigError, match=r"input_type='image', but the input column has Spark type binary"
    ):
        input_kind(binary, "image")
    with pytest.raises(ConfigError, match="unknown input_type 'jpeg'"):
        fx.image_features("c", weights=None, input_type="jpeg")  # type: ignore[arg-type]
    assert images is not None


def test_on_error_raise_fails_the_task_with_the_reason(spark: SparkSession) -> None:
    df = spark.createDataFrame(pd.DataFrame({"content": [jpeg(), b"garbage"]}), "content binary")
    col = fx.image_features("content", model="resnet18", weights=None, on_error="raise")
    with pytest.raises(Exception, match=r"cannot featurize input row \d: not an image"):
        df.coalesce(1).select(col).collect()


def test_on_error_raise_names_the_file(spark: SparkSession, tmp_path: Path) -> None:
    (tmp_path / "good.jpg").write_bytes(jpeg(120, 90))
    (tmp_path / "broken.jpg").write_bytes(b"<html>404 Not Found</html>")
    col = fx.image_features(
        "content", model="resnet18", weights=None, on_error="raise", path_col="path"
    )
    with pytest.raises(Exception, match=r"cannot featurize 'file:[^']*/broken\.jpg': not an image"):
        _files(spark, tmp_path).coalesce(1).select(col).collect()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs an executor without CUDA")
def test_a_task_on_an_executor_without_cuda_fails_at_once_in_one_line(
    spark: SparkSession, tmp_path: Path
) -> None:
    # From Python the driver cannot know the executors' GPUs (a cluster's may have them):
    # the first task without one fails before any model is built, with one short line.
    factory = LoggedBuild(str(tmp_path / "builds.log"))
    df = spark.createDataFrame([(jpeg(),)], "content binary")
    col = fx.image_features("content", **tiny_engine(model=factory, device="cuda"))
    with pytest.raises(Exception) as info:
        df.select(col).collect()
    lines = re.findall(r"^\w*Error: .*$", str(info.value), re.M)
    assert lines[-1] == "RuntimeError: device='cuda' but CUDA is not available in this process"
    assert factory.builds() == []


@pytest.mark.parametrize("with_errors", [False, True])
def test_features_go_back_as_one_arrow_array_over_the_matrix(with_errors: bool) -> None:
    # pyspark 4.1+'s Arrow UDFs return this array as it is: no Python object per row.
    from featurex.spark import _to_arrow

    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    matrix[2] = np.nan  # a failed row: NaN in the matrix, null in the column
    errors = [None, None, "not an image", None]
    out = _to_arrow(matrix, errors, with_errors)
    features = out.field("features") if with_errors else out
    assert features.to_pylist() == [[0, 1, 2], [3, 4, 5], None, [9, 10, 11]]
    assert str(features.type.value_type) == "float"
    assert features.values.buffers()[1].address == matrix.ctypes.data  # the same memory
    if with_errors:
        assert out.field("error").to_pylist() == errors
