"""The Python API fails on the driver, at call time, in one line, where the driver can know
(issue 26, item 4): weights that cannot be had offline, a column of the wrong type, a string
column of words; an unknown option lists every option, `weights` included. No job runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyspark
import pytest
from families import fake_hub_repo, save_tiny_dinov2
from pyspark.sql import SparkSession

import featurex as fx
from featurex.errors import ConfigError, WeightsUnavailableError

ROOT = Path(__file__).parent.parent


@pytest.fixture
def no_jobs(spark: SparkSession) -> Iterator[None]:
    """Fails the test if a Spark job ran inside it."""
    group = f"featurex-no-jobs-{os.getpid()}-{id(spark)}"
    spark.sparkContext.setJobGroup(group, "must stay empty")
    yield
    ran = spark.sparkContext.statusTracker().getJobIdsForGroup(group)
    spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
    assert ran == [], f"jobs ran: {ran}"


# In a fresh process: torch.hub's download goes through a proxy on a closed loopback port, so
# it fails at once whether this machine is online or not.
OFFLINE_SCRIPT = r"""
import json, featurex as fx
try:
    fx.image_features("content", model="resnet18")
    print(json.dumps({"error": None}))
except fx.FeatureXError as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
"""


def test_torchvision_weights_that_cannot_be_downloaded_fail_when_the_column_is_made(
    tmp_path: Path,
) -> None:
    import json

    proxy = "http://127.0.0.1:9"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path / "torch"),
           "https_proxy": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "HTTP_PROXY": proxy,
           "no_proxy": "", "NO_PROXY": ""}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    error = json.loads(done.stdout.splitlines()[-1])["error"]
    assert error.startswith("WeightsUnavailableError: cannot download ResNet18_Weights"), error
    assert "\n" not in error and "weights=None" in error


@pytest.fixture
def configs_only_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A Hub repo whose configs are in the Hugging Face cache but not its weights, and a Hub
    that cannot be reached (a name that never resolves)."""
    from huggingface_hub import constants

    folder = save_tiny_dinov2(tmp_path / "dinov2")
    (folder / "model.safetensors").unlink()
    cache = tmp_path / "hub"
    fake_hub_repo(cache, "featurex-tests/configs-only", folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", "http://hub.invalid")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return "hf:featurex-tests/configs-only"


def test_weights_not_in_the_cache_fail_in_image_features_and_the_ml_stage_before_any_job(
    configs_only_repo: str, spark: SparkSession, no_jobs: None
) -> None:
    df = spark.createDataFrame(pd.DataFrame({"content": [b"\xff\xd8"]}))
    calls = {
        "image_features": lambda: fx.image_features("content", model=configs_only_repo),
        "ImageFeaturizer": lambda: fx.ImageFeaturizer(
            inputCol="content", outputCol="f", model=configs_only_repo
        ).transform(df),
        "ImageVectorizer": lambda: fx.ImageVectorizer(model=configs_only_repo).process_images(df),
    }
    for name, call in calls.items():
        with pytest.raises(WeightsUnavailableError) as info:
            call()
        message = str(info.value)
        assert message.startswith(
            f"cannot download {configs_only_repo} at {'a1' * 20} (the Hub cannot be reached: "
        ), (name, message)
        assert "Offline? use a local folder" in message, (name, message)
        assert "\n" not in message, name
    # A random init needs the configs alone: nothing to fetch.
    fx.image_features("content", model=configs_only_repo, weights=None)


def test_an_integer_column_fails_at_call_time_where_the_dataframe_is_at_hand(
    spark: SparkSession, no_jobs: None
) -> None:
    df = spark.createDataFrame([(1,), (2,)], "n long")
    expected = (
        "the input column 'n' has Spark type bigint: featurex expects binary image bytes "
        "(binaryFile's 'content'), a string column of paths, or the struct of "
        "spark.read.format('image') (its 'image' column)"
    )
    with pytest.raises(ConfigError) as info:
        fx.ImageVectorizer(model="resnet18", weights=None).process_images(df, "n")
    assert str(info.value) == expected
    with pytest.raises(ConfigError) as info:
        fx.ImageFeaturizer(inputCol="n", outputCol="f", model="resnet18", weights="none").transform(
            df
        )
    assert str(info.value) == expected


def test_a_column_of_words_fails_at_call_time_when_its_rows_are_on_the_driver(
    spark: SparkSession, no_jobs: None
) -> None:
    words = spark.createDataFrame(pd.DataFrame({"text": ["hello", "world", None, "cat"]}))
    if pyspark.__version__.startswith("3."):
        # pyspark 3.5 parallelizes a pandas frame: its rows are not on the driver, so they
        # are not sampled (check_input's documented limit): no refusal, and no job.
        assert not words.isLocal()
        out = fx.ImageVectorizer(model="resnet18", weights=None).process_images(words, "text")
        assert out.columns == ["text", "features"]
        return
    assert words.isLocal()
    expected = (
        "the input column 'text' is read as paths or URIs (a string column), but none of its "
        "first 3 values is one ('hello', 'world', 'cat'; no '/', scheme or file extension): "
        "pass the column of image paths, or binaryFile's 'content'"
    )
    with pytest.raises(ConfigError) as info:
        fx.ImageVectorizer(model="resnet18", weights=None).process_images(words, "text")
    assert str(info.value) == expected
    with pytest.raises(ConfigError) as info:
        fx.ImageFeaturizer(
            inputCol="text", outputCol="f", model="resnet18", weights="none"
        ).transform(words)
    assert str(info.value) == expected
    # One path among them is enough: a missing file is a null and its reason, not a refusal.
    fine = spark.createDataFrame(pd.DataFrame({"p": ["hello", "photos/cat.jpg", "s3://b/k"]}))
    out = fx.ImageVectorizer(model="resnet18", weights=None).process_images(fine, "p")
    assert out.columns == ["p", "features"]
    for value in ("cat.JPG", "C:\\photos\\cat", "file:cat", "gs://bucket/cat"):
        one = spark.createDataFrame(pd.DataFrame({"p": [value]}))
        fx.ImageVectorizer(model="resnet18", weights=None).process_images(one, "p")


def test_a_column_computed_by_spark_is_not_sampled(spark: SparkSession, no_jobs: None) -> None:
    # Its rows are not on the driver: reading one would run a job. The limit, documented in
    # check_input: its words become nulls with "cannot read" when the job runs.
    words = spark.range(3).selectExpr("concat('word', id) AS text")
    assert not words.isLocal()
    out = fx.ImageVectorizer(model="resnet18", weights=None).process_images(words, "text")
    assert out.columns == ["text", "features"]


def test_an_unknown_option_lists_weights_among_the_options() -> None:
    with pytest.raises(ConfigError) as info:
        fx.image_features("content", model="resnet18", weight=None)
    message = str(info.value)
    assert message.startswith(
        "unknown option 'weight': did you mean 'weights'? (options: model, weights, seed, "
    )
    assert "\n" not in message
