"""`ImageFeaturizer` in ML Pipelines on real local Spark: it learns, saves, loads, validates."""

from __future__ import annotations

import json
import pickle
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from images import encode
from models_for_tests import assert_close, reference_features
from PIL import Image
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.linalg import DenseVector
from pyspark.sql import DataFrame, SparkSession

import featurex as fx
from featurex import ExtractorConfig
from featurex._types import DECODES, ON_ERRORS, PRECISIONS
from featurex.errors import ConfigError


def _texture(label: int, rng: np.random.Generator, size: int = 96) -> bytes:
    """Class 0: warm horizontal stripes. Class 1: cool checkerboard. Random hue, scale, noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(6, 16)
    phase = rng.uniform(0, period)
    if label == 0:
        pattern = np.sin(2 * np.pi * (y + phase) / period) > 0
        light, dark = (
            rng.uniform([200, 90, 20], [255, 160, 80]),
            rng.uniform([90, 20, 0], [150, 60, 30]),
        )
    else:
        pattern = ((x + phase) // period + (y + phase) // period) % 2 == 0
        light, dark = (
            rng.uniform([20, 120, 180], [80, 200, 255]),
            rng.uniform([0, 30, 60], [30, 80, 120]),
        )
    pixels = np.where(pattern[..., None], light, dark) + rng.normal(0, 12, (size, size, 3))
    return encode(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"), "PNG")


def _dataset(spark: SparkSession, n_per_class: int, seed: int) -> DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(i, _texture(i % 2, rng), float(i % 2)) for i in range(2 * n_per_class)]
    return spark.createDataFrame(rows, "id long, image binary, label double").coalesce(1)


def _featurizer(**params: object) -> fx.ImageFeaturizer:
    base: dict[str, object] = {
        "inputCol": "image", "model": "resnet18", "weights": "none", "batchSize": 8,
    }  # fmt: skip
    return fx.ImageFeaturizer(**{**base, **params})  # type: ignore[arg-type]


@pytest.mark.slow
def test_pipeline_learns_two_textures_and_survives_save_and_load(
    spark: SparkSession, tmp_path: Path
) -> None:
    train, test = _dataset(spark, 12, seed=1), _dataset(spark, 8, seed=2)
    pipeline = Pipeline(stages=[
        _featurizer(outputType="vector"),
        LogisticRegression(featuresCol="features", labelCol="label", maxIter=10, regParam=0.01),
    ])  # fmt: skip
    fitted = pipeline.fit(train)

    predicted = fitted.transform(test).select("id", "label", "prediction", "probability")
    rows = predicted.orderBy("id").collect()
    accuracy = np.mean([r["prediction"] == r["label"] for r in rows])
    assert len(rows) == 16 and accuracy >= 0.9, f"held-out accuracy {accuracy:.2f}"

    fitted.write().save(str(tmp_path / "model"))
    loaded = PipelineModel.load(str(tmp_path / "model"))
    stage = loaded.stages[0]
    assert isinstance(stage, fx.ImageFeaturizer) and stage.uid == fitted.stages[0].uid
    assert stage.extractor_config() == fitted.stages[0].extractor_config()
    again = loaded.transform(test).select("id", "prediction", "probability").orderBy("id").collect()
    assert [r["prediction"] for r in again] == [r["prediction"] for r in rows]
    assert np.array_equal([r["probability"] for r in again], [r["probability"] for r in rows])


def test_array_and_vector_outputs_hold_the_reference_features(spark: SparkSession) -> None:
    bad = spark.createDataFrame([(99, b"not an image", 0.0)], "id long, image binary, label double")
    df = _dataset(spark, 2, seed=3).unionByName(bad).coalesce(1)
    arrays = _featurizer(outputCol="a").transform(df)
    both = _featurizer(outputCol="v", outputType="vector").transform(arrays)
    assert dict(both.dtypes)["a"] == "array<float>" and dict(both.dtypes)["v"] == "vector"
    *rows, failed = both.orderBy("id").collect()
    # A bad image is a null vector, not a failed job (array_to_vector alone fails on null).
    assert failed["id"] == 99 and failed["a"] is None and failed["v"] is None
    assert all(isinstance(r["v"], DenseVector) for r in rows)
    a = np.array([r["a"] for r in rows], dtype=np.float32)
    v = np.array([r["v"].toArray() for r in rows])
    assert v.dtype == np.float64 and np.array_equal(v, a.astype(np.float64))
    assert_close(a, reference_features([bytes(r["image"]) for r in rows], "resnet18"))


def test_bytes_paths_and_image_structs_give_the_same_features(
    spark: SparkSession, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    for i in range(3):  # lossless PNGs: Spark's BGR struct holds exactly the same pixels
        (tmp_path / f"t{i}.png").write_bytes(_texture(i % 2, rng))
    # One partition each: one Python worker, one model load.
    files = spark.read.format("binaryFile").load(str(tmp_path)).select("path", "content")
    files = files.coalesce(1)
    paths = files.select("path")
    structs = spark.read.format("image").load(str(tmp_path)).coalesce(1)
    features = {}
    for kind, df, col in (("bytes", files, "content"), ("path", paths, "path"),
                          ("image", structs, "image")):  # fmt: skip
        out = _featurizer(inputCol=col).transform(df)  # inputType="auto": from the Spark type
        exact = _featurizer(inputCol=col, inputType=kind, outputCol="exact").transform(out)
        name = "image.origin" if kind == "image" else "path"
        rows = exact.select(name, "features", "exact").collect()
        assert all(r["features"] == r["exact"] for r in rows)
        features[kind] = dict(sorted((Path(r[0]).name, r["features"]) for r in rows))
    assert list(features["bytes"]) == ["t0.png", "t1.png", "t2.png"]
    expected = np.array(list(features["bytes"].values()), dtype=np.float32)
    for kind in ("path", "image"):
        assert list(features[kind]) == list(features["bytes"])
        assert_close(np.array(list(features[kind].values()), dtype=np.float32), expected)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": "resnet5O"}, "unknown model 'resnet5O': did you mean 'resnet50'"),
        ({"outputType": "matrix"}, "unknown outputType 'matrix': expected 'array' or 'vector'"),
        ({"inputType": "url"}, "unknown inputType 'url'"),
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        # In the words of the stage: its params, camelCased.
        ({"onError": "skip"}, "unknown onError 'skip'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"batchSize": 0}, "batchSize must be a positive int, got 0 (or batchSize unset for the default)"),
        ({"maxPixels": -1}, "maxPixels must be a positive int, got -1"),
        ({"decode": "tpu"}, "unknown decode 'tpu': expected one of 'auto', 'cpu', 'gpu'"),
        ({"decode": "gpu", "device": "cpu"}, "decode='gpu' decodes on the GPU the model runs on, but device='cpu'"),
        ({"precision": "int8", "device": "cuda"}, "precision='int8' runs on the CPU"),
        ({"calibration": "/missing"}, "calibration='/missing' is used only with precision='int8'"),
        ({"model": "tf:resnet50"}, "unknown model family 'tf:' in model='tf:resnet50'"),
        ({"weights": "/missing/r18.pth"}, "checkpoint file not found: '/missing/r18.pth'. Pass an existing .pth/.pt/.safetensors state_dict, a weights name, or weights='none'"),
        ({"weights": "IMAGENET9K"}, "unknown weights 'IMAGENET9K' for resnet18"),
        ({"handleInvalid": "drop"}, "unknown handleInvalid 'drop': expected one of 'error', 'keep', 'skip'"),
        ({"handleInvalid": "skip", "onError": "raise"}, "handleInvalid='skip' and onError='raise' disagree: handleInvalid='skip' needs onError='null'"),
        ({"handleInvalid": "error", "onError": "null"}, "handleInvalid='error' and onError='null' disagree"),
        ({"errorCol": "features"}, "errorCol and outputCol are both 'features'"),
    ],
)  # fmt: skip
def test_a_bad_param_fails_at_construction_naming_the_value(
    params: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        _featurizer(**params)


@pytest.fixture
def job_group(spark: SparkSession) -> Iterator[str]:
    group = f"featurex-{uuid.uuid4().hex}"
    spark.sparkContext.setJobGroup(group, "test_ml")
    yield group
    spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]


def test_a_bad_param_set_later_fails_before_any_job(spark: SparkSession, job_group: str) -> None:
    tracker = spark.sparkContext.statusTracker()
    train = _dataset(spark, 2, seed=4)
    featurizer = _featurizer(outputType="vector")
    pipeline = Pipeline(stages=[featurizer, LogisticRegression(maxIter=1)])
    featurizer.setPrecision("fp8")  # setters follow pyspark.ml: checked when used
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        pipeline.fit(train)
    featurizer.setPrecision("fp32").setOutputType("Vector")
    with pytest.raises(ConfigError, match="unknown outputType 'Vector'"):
        featurizer.transform(train)
    featurizer.setOutputType("vector")
    with pytest.raises(ConfigError, match="input column 'id' has Spark type bigint"):
        featurizer.copy({featurizer.inputCol: "id"}).transform(train)
    with pytest.raises(
        ConfigError, match="inputType='path', but the input column 'image' has Spark type binary"
    ):
        featurizer.copy({featurizer.inputType: "path"}).transform(train)
    assert tracker.getJobIdsForGroup(job_group) == []
    # The same check sees the jobs of a good transform: it can fail.
    featurizer.transform(train).count()
    assert len(tracker.getJobIdsForGroup(job_group)) > 0


def test_every_option_but_transform_is_a_param_with_the_configs_default() -> None:
    from featurex.config import OPTIONS
    from featurex.ml import PARAMS

    stage = fx.ImageFeaturizer(weights="none")
    options = {"model", "weights", *OPTIONS} - {"transform"}
    assert set(PARAMS) == options
    assert all(stage.hasParam(PARAMS[o]) for o in options)
    assert stage.extractor_config() == ExtractorConfig(weights=None)
    # Each param's doc names the option's choices.
    for param, choices in (("precision", PRECISIONS), ("decode", DECODES), ("onError", ON_ERRORS)):
        doc = stage.getParam(param).doc
        assert all(c in doc for c in choices), (param, doc)


def test_holds_only_params_pickles_small_and_round_trips(
    spark: SparkSession, tmp_path: Path
) -> None:
    featurizer = _featurizer(outputType="vector", weights=None, batchSize=None, device="cpu",
                             seed=3, decode="cpu", decodeThreads=2, readAhead=4, maxPixels=10**7,
                             fastDecode=True, optimize=False, onError="raise")  # fmt: skip
    assert featurizer.getWeights() == "none" and featurizer.getBatchSize() is None
    assert featurizer.extractor_config() == ExtractorConfig(
        model="resnet18", weights=None, device="cpu", seed=3, decode="cpu", decode_threads=2,
        read_ahead=4, max_pixels=10**7, fast_decode=True, optimize=False, on_error="raise",
    )  # fmt: skip
    assert featurizer.getFastDecode() is True and featurizer.getReadAhead() == 4
    featurizer.setFastDecode(None)  # unset again: the config's default
    assert featurizer.getFastDecode() is None
    assert featurizer.extractor_config().fast_decode is False
    payload = pickle.dumps(featurizer)
    assert len(payload) < 4000 and b"SparkSession" not in payload
    assert pickle.loads(payload).extractParamMap() == featurizer.extractParamMap()

    featurizer.write().save(str(tmp_path / "stage"))
    loaded = fx.ImageFeaturizer.load(str(tmp_path / "stage"))
    assert loaded.uid == featurizer.uid
    assert {p.name: v for p, v in loaded.extractParamMap().items()} == {
        p.name: v for p, v in featurizer.extractParamMap().items()
    }
    assert loaded.extractor_config() == featurizer.extractor_config()


def _with_failures(spark: SparkSession, n_per_class: int, seed: int) -> DataFrame:
    """Textures, then a corrupt image, an empty one and a null (ids 900-902)."""
    bad = spark.createDataFrame(
        [(900, b"\xff\xd8 not a jpeg", 0.0), (901, b"", 1.0), (902, None, 0.0)],
        "id long, image binary, label double",
    )
    return _dataset(spark, n_per_class, seed).unionByName(bad).coalesce(1)


def _udf_runs(df: DataFrame) -> int:
    """How many times the executed plan runs featurex's UDF (each run is a forward pass)."""
    plan = df._jdf.queryExecution().executedPlan().toString()  # type: ignore[operator]
    return len(re.findall(r"features_(?:only|and_errors)\(", plan))


@pytest.mark.slow
def test_a_pipeline_skips_failed_images_and_survives_save_and_load(
    spark: SparkSession, tmp_path: Path
) -> None:
    train, test = _with_failures(spark, 6, seed=6), _with_failures(spark, 4, seed=7)
    featurizer = _featurizer(outputType="vector", handleInvalid="skip", errorCol="error")
    pipeline = Pipeline(stages=[featurizer, LogisticRegression(maxIter=5, regParam=0.01)])
    fitted = pipeline.fit(train)  # LogisticRegression alone fails on a null vector
    predicted = fitted.transform(test)
    assert _udf_runs(predicted) == 1
    rows = predicted.select("id", "error", "prediction").orderBy("id").collect()
    assert [r["id"] for r in rows] == list(range(8)) and {r["error"] for r in rows} == {None}

    fitted.write().save(str(tmp_path / "model"))
    loaded = PipelineModel.load(str(tmp_path / "model"))
    stage = loaded.stages[0]
    assert isinstance(stage, fx.ImageFeaturizer)
    assert (stage.getHandleInvalid(), stage.getErrorCol()) == ("skip", "error")
    again = loaded.transform(test).select("id", "prediction").orderBy("id").collect()
    assert [(r["id"], r["prediction"]) for r in again] == [(r["id"], r["prediction"]) for r in rows]


def test_keep_holds_failed_rows_as_nulls_with_their_reasons(spark: SparkSession) -> None:
    df = _with_failures(spark, 1, seed=8)
    kept = _featurizer(outputType="vector", errorCol="why").transform(df)  # keep: the default
    # A later stage's filter on the output does not run the model a second time.
    assert _udf_runs(kept) == 1 and _udf_runs(kept.where("features is not null")) == 1
    rows = {r["id"]: r for r in kept.select("id", "features", "why").collect()}
    assert sorted(rows) == [0, 1, 900, 901, 902]
    assert all(isinstance(rows[i]["features"], DenseVector) and rows[i]["why"] is None
               for i in (0, 1))  # fmt: skip
    assert all(rows[i]["features"] is None for i in (900, 901, 902))
    assert rows[900]["why"].startswith("not an image")
    assert rows[901]["why"] == "empty input (0 bytes)" and rows[902]["why"] == "null input"
    # Without errorCol the stage adds its output column and nothing else.
    assert _featurizer().transform(df).columns == [*df.columns, "features"]


def test_error_fails_the_task_naming_the_reason(spark: SparkSession) -> None:
    bad = spark.createDataFrame([(900, b"\xff\xd8 not a jpeg")], "id long, image binary")
    stage = _featurizer(handleInvalid="error")
    assert stage.extractor_config().on_error == "raise"
    with pytest.raises(Exception, match="not an image"):
        stage.transform(bad).collect()


def test_handle_invalid_saves_loads_and_a_stage_saved_without_it_keeps(
    spark: SparkSession, tmp_path: Path
) -> None:
    stage = _featurizer(handleInvalid="skip", errorCol="error")
    stage.write().save(str(tmp_path / "skip"))
    loaded = fx.ImageFeaturizer.load(str(tmp_path / "skip"))
    assert (loaded.getHandleInvalid(), loaded.getErrorCol()) == ("skip", "error")
    assert loaded.isSet(loaded.handleInvalid)
    # A stage saved before the param existed (its metadata has no handleInvalid): keep, as
    # it behaved then.
    _featurizer().write().save(str(tmp_path / "old"))
    [metadata] = (tmp_path / "old" / "metadata").glob("part-00000*")
    saved = json.loads(metadata.read_text())
    for params in (saved["paramMap"], saved["defaultParamMap"]):
        params.pop("handleInvalid", None)
    metadata.write_text(json.dumps(saved))
    metadata.with_name(f".{metadata.name}.crc").unlink()  # Hadoop's checksum of the old text
    old = fx.ImageFeaturizer.load(str(tmp_path / "old"))
    assert old.getHandleInvalid() == "keep" and old.extractor_config().on_error == "null"
    # onError, the older spelling, still works alone.
    assert _featurizer(onError="raise").extractor_config().on_error == "raise"
