"""The Spark adapter: the only module that imports pyspark.

`image_features` validates its arguments into an `ExtractorConfig` on the driver and returns
a Column backed by a scalar-iterator pandas UDF. The UDF's closure holds that config and
nothing else (no session, no context, no model), so it pickles to a few hundred bytes and
runs unchanged under Spark Connect. Each worker process builds the model once, through the
process cache, and reuses it for every batch, task and job with the same config.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql.pandas.functions import pandas_udf as _pandas_udf
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from .config import DEFAULT_MAX_PIXELS, ExtractorConfig, ModelFactory, OnError, Precision, Transform
from .errors import ConfigError
from .extractor import FeatureExtractor

FEATURES_TYPE = ArrayType(FloatType(), containsNull=False)
# pyspark's stubs have no overload for an iterator UDF that returns DataFrames (a struct).
pandas_udf: Any = _pandas_udf
WITH_ERRORS_TYPE = StructType(
    [StructField("features", FEATURES_TYPE), StructField("error", StringType())]
)


def image_features(
    col: Column | str,
    model: str | ModelFactory = "resnet50",
    weights: str | None = "DEFAULT",
    batch_size: int | None = None,
    device: str = "auto",
    precision: Precision = "fp32",
    on_error: OnError = "null",
    with_errors: bool = False,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decode_threads: int | None = None,
    seed: int = 0,
    transform: Transform | None = None,
) -> Column:
    """A Column of image feature vectors from a column of image bytes.

    Returns `array<float>` (null where an image could not be decoded) or, with
    `with_errors=True`, `struct<features: array<float>, error: string>`.
    """
    config = ExtractorConfig(
        model=model,
        weights=weights,
        seed=seed,
        transform=transform,
        batch_size=batch_size,
        device=device,
        precision=precision,
        decode_threads=decode_threads,
        on_error=on_error,
        max_pixels=max_pixels,
    )
    return features_column(col, config, with_errors)


def features_column(
    col: Column | str, config: ExtractorConfig, with_errors: bool = False
) -> Column:
    """The Column for an already validated config."""
    if not isinstance(with_errors, bool):
        raise ConfigError(f"with_errors must be True or False, got {with_errors!r}")
    if not isinstance(col, Column | str):
        raise ConfigError(
            f"col must be a column name or a Column of image bytes, got {type(col).__name__}"
        )
    column: Column = features_udf(config, with_errors)(col)
    return column


def features_udf(config: ExtractorConfig, with_errors: bool = False) -> Any:
    """The pandas UDF itself. Its function closes over `config` and nothing else."""
    if with_errors:

        def features_and_errors(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
            for features, errors in _stream(config, batches):
                yield pd.DataFrame({"features": features, "error": errors})

        return pandas_udf(features_and_errors, WITH_ERRORS_TYPE)

    def features_only(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        for features, _ in _stream(config, batches):
            yield features

    return pandas_udf(features_only, FEATURES_TYPE)


def _stream(
    config: ExtractorConfig, batches: Iterator[pd.Series]
) -> Iterator[tuple[pd.Series, list[str | None]]]:
    """Runs in the Python worker: Arrow batches of bytes -> Series of float32 arrays."""
    extractor = FeatureExtractor.from_config(config)
    inputs = (_as_bytes(series) for series in batches)
    for features, errors in extractor.extract_batches(inputs):
        rows: list[np.ndarray | None] = [
            None if err is not None else row for row, err in zip(features, errors, strict=True)
        ]
        yield pd.Series(rows, dtype=object), errors


def _as_bytes(series: pd.Series) -> list[object]:
    """The batch as a list, refusing a column that is not binary with a clear message."""
    values = series.tolist()
    for value in values:
        if value is None:
            continue
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(
                f"featurex.image_features expects a binary column of encoded image bytes "
                f"(for example the 'content' column of spark.read.format('binaryFile')), "
                f"but got values of type {type(value).__name__}: {str(value)[:60]!r}"
            )
        break  # one column has one type: the first non-null value tells
    return values
