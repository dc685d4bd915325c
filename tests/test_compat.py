"""The seed's naive class fails with SPARK-5063; ImageVectorizer does the same job."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from images import jpeg
from models_for_tests import assert_close, reference_features
from pyspark import cloudpickle
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.functions import udf
from pyspark.sql.types import ArrayType, FloatType

import featurex as fx


class SeedVectorizer:
    """The seed's pattern: holds the session and registers a lambda over `self`."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self.extractor = fx.FeatureExtractor("resnet18", weights=None, device="cpu")

    def extract_features(self, image_bytes: bytes) -> list[float]:
        return [float(v) for v in self.extractor.extract([image_bytes])[0][0]]

    def process_images(self, df: DataFrame) -> DataFrame:
        extract = udf(lambda x: self.extract_features(x), ArrayType(FloatType()))
        return df.withColumn("features", extract("content"))


def _files(spark: SparkSession, image_dir: Path) -> DataFrame:
    return (
        spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(image_dir))
    )


def test_seed_class_fails_with_spark_5063(spark: SparkSession, image_dir: Path) -> None:
    seed = SeedVectorizer(spark)
    with pytest.raises(Exception, match=r"SPARK-5063|CONTEXT_ONLY_VALID_ON_DRIVER") as info:
        seed.process_images(_files(spark, image_dir)).collect()
    assert "SparkContext" in str(info.value) or "driver" in str(info.value)


def test_image_vectorizer_works_where_the_seed_fails(spark: SparkSession, image_dir: Path) -> None:
    vectorizer = fx.ImageVectorizer(model="resnet18", weights=None)
    out = vectorizer.process_images(_files(spark, image_dir), output_col="vec")
    rows = out.select("content", "vec").collect()
    assert len(rows) == 12
    features = np.array([r["vec"] for r in rows], dtype=np.float32)
    assert_close(features, reference_features([bytes(r["content"]) for r in rows]))


def test_extract_features_gives_2048_floats_for_resnet50() -> None:
    vectorizer = fx.ImageVectorizer(model="resnet50", weights=None)
    features = vectorizer.extract_features(jpeg(300, 200))
    assert isinstance(features, list) and len(features) == 2048
    assert all(isinstance(v, float) for v in features)
    assert np.isfinite(features).all()


def test_extract_features_names_the_problem_with_a_bad_image() -> None:
    vectorizer = fx.ImageVectorizer(model="resnet18", weights=None)
    with pytest.raises(ValueError, match="cannot extract features: not an image"):
        vectorizer.extract_features(b"definitely not a jpeg")


def test_image_vectorizer_pickles_small_without_session_or_model() -> None:
    vectorizer = fx.ImageVectorizer(model="resnet18", weights=None, batch_size=4)
    vectorizer.extract_features(jpeg())  # the model is loaded, in the process cache
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        payload = dumps(vectorizer)
        assert len(payload) < 2_000
        assert loads(payload).config == vectorizer.config


def test_image_vectorizer_validates_on_construction() -> None:
    with pytest.raises(fx.FeatureXError, match="unknown model 'resnet9000'"):
        fx.ImageVectorizer(model="resnet9000")


def test_process_images_checks_the_column_type_on_the_driver(spark: SparkSession) -> None:
    # The DataFrame is at hand: a column of another type fails here, not in a task.
    ids = spark.range(3)
    vectorizer = fx.ImageVectorizer(model="resnet18", weights=None)
    with pytest.raises(
        fx.FeatureXError,
        match=r"^the input column 'id' has Spark type bigint: featurex expects binary image bytes",
    ):
        vectorizer.process_images(ids, input_col="id")
