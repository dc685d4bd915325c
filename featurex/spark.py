"""The Spark adapter: the only module of the core that imports pyspark.

`image_features` validates its arguments into an `ExtractorConfig` on the driver and returns
a Column backed by a scalar-iterator pandas UDF. The UDF's closure holds that config and
nothing else (no session, no context, no model), so it pickles to a few hundred bytes and
runs unchanged under Spark Connect. Each worker process builds the model once, through the
process cache, and reuses it for every batch, task and job with the same config.
"""

from __future__ import annotations

import gc
import itertools
import os
import re
from collections.abc import Iterator
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql.pandas.functions import pandas_udf as _pandas_udf
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DataType,
    FloatType,
    StringType,
    StructField,
    StructType,
)

from . import models
from ._compat import has_arrow_udfs, is_column
from ._logs import quiet_libraries
from ._types import ModelFactory
from ._words import opt
from .config import ExtractorConfig, with_config_options
from .decode import PixelRecord
from .errors import ConfigError
from .extractor import FeatureExtractor
from .models import task_device

InputType = Literal["auto", "bytes", "image", "path"]
INPUT_TYPES: tuple[str, ...] = get_args(InputType)
FEATURES_TYPE = ArrayType(FloatType(), containsNull=False)
WITH_ERRORS_TYPE = StructType(
    [StructField("features", FEATURES_TYPE), StructField("error", StringType())]
)
# The fields of Spark's image data source struct that decoding needs.
IMAGE_FIELDS = ("height", "width", "nChannels", "data")
# pyspark's stubs have no overload for an iterator UDF that returns DataFrames (a struct).
pandas_udf: Any = _pandas_udf


@with_config_options
def image_features(
    col: Column | str,
    model: str | ModelFactory = "resnet50",
    weights: str | None = "DEFAULT",
    *,
    with_errors: bool = False,
    input_type: InputType = "auto",
    path_col: Column | str | None = None,
    **options: Any,
) -> Column:
    """A Column of image feature vectors.

    `col` holds encoded image bytes (binaryFile's `content`), paths or URIs read on the
    executors (a string column), or Spark's image data source struct; `input_type="auto"`
    tells them apart by type. `path_col` (for example binaryFile's `path`) names rows in
    the error raised with `on_error="raise"`. `options` are `ExtractorConfig`'s fields
    (batch_size, device, precision, normalize, on_error, ...: see `help(image_features)`).

    Returns `array<float>` (null where an image could not be used) or, with
    `with_errors=True`, `struct<features: array<float>, error: string>`: one row out per
    row in, a bad image is a null and its reason.

    Which files become rows is the reader's choice. Spark's file sources
    (`spark.read.format("binaryFile")`, `"image"`) skip files whose names start with "_" or
    "." (`_DSC0001.JPG`, everything under `_archive/`, even a file named directly) and files
    of 0 bytes, whatever `pathGlobFilter` or `recursiveFileLookup` say: those files get no
    row at all. To featurize every file, list them with `featurex.list_images` (what
    `featurex extract` does: hidden names and empty files included, the files it leaves out
    counted by reason) and read the paths here with `input_type="path"`; an empty file then
    gets a null and "empty input (0 bytes)", as on the command line.

    Checked now, on the driver, before any job: every option; pretrained weights not in
    this machine's cache are downloaded now (offline, that fails here in one line). A
    column's type and values are checked where its DataFrame is at hand (`ImageFeaturizer`,
    `ImageVectorizer.process_images`, the command line): here `col` is only a name, so a
    column of the wrong type fails when the job runs.
    """
    config = ExtractorConfig.from_options(model, weights, options)
    return features_column(col, config, with_errors, input_type, path_col)


def features_column(
    col: Column | str,
    config: ExtractorConfig,
    with_errors: bool = False,
    input_type: InputType = "auto",
    path_col: Column | str | None = None,
) -> Column:
    """The Column for an already validated config."""
    if not isinstance(with_errors, bool):
        raise ConfigError(f"{opt('with_errors')} must be True or False, got {with_errors!r}")
    if input_type not in INPUT_TYPES:
        raise ConfigError(
            f"unknown {opt('input_type')} {input_type!r}: expected one of "
            f"{', '.join(map(repr, INPUT_TYPES))}"
        )
    for name, value in (("col", col), ("path_col", path_col)):
        if value is None and name == "path_col":
            continue
        if not (isinstance(value, str) or is_column(value)):  # classic or Connect, any pyspark
            raise ConfigError(f"{opt(name)} must be a column name or a Column, got {value!r}")
    udf = features_udf(config, with_errors, input_type, path_col is not None)
    column: Column = udf(col) if path_col is None else udf(col, path_col)
    return column


def check_input(
    df: DataFrame, col: str, input_type: InputType = "auto", sample: bool = True
) -> str:
    """On the driver, for callers that hold the DataFrame (`ImageFeaturizer`,
    `ImageVectorizer.process_images`, the CLI): the kind of column `col`, or a ConfigError
    naming its Spark type. No job runs: the schema is read, and, with `sample`, the first
    values of a string column whose rows are on the driver (`DataFrame.isLocal()`: a
    DataFrame made from pandas, or any small local data under Spark Connect) must include a
    path or URI. A DataFrame computed by Spark (files, tables, an RDD) is not sampled: a
    value that is no path gets a null and "cannot read" when the job runs.
    """
    kind = input_kind(df.select(col).schema.fields[0].dataType, input_type, col)
    if kind == "path" and sample:
        _check_paths(df, col)
    return kind


# How many values of a local string column are looked at (one is enough to accept it).
_SAMPLED = 5
_URI_OR_PATH = re.compile(r"^[A-Za-z][\w+.\-]*:|[/\\]|\.\w{1,5}$")


def _check_paths(df: DataFrame, col: str) -> None:
    """Refuse a local string column whose first values are none of them a path or URI (a
    column of words, ids, captions): they would each give a null and "cannot read"."""
    if not df.isLocal():
        return  # reading a row would run a job
    values = [r[0] for r in df.select(col).take(_SAMPLED) if r[0] is not None]
    if not values or any(_URI_OR_PATH.search(str(v).strip()) for v in values):
        return
    shown = ", ".join(repr(str(v)[:40]) for v in values[:3])
    raise ConfigError(
        f"the input column {col!r} is read as paths or URIs (a string column), but none of its "
        f"first {len(values)} values is one ({shown}; no '/', scheme or file extension): pass "
        f"the column of image paths, or binaryFile's 'content'"
    )


def check_weights(config: ExtractorConfig) -> None:
    """On the driver: pretrained weights that are not in this machine's cache are fetched
    now, as `featurex extract` does, so that weights that cannot be had (no network, no
    such file on the hub) fail here in one line (`WeightsUnavailableError`), not in every
    task of the job inside a Java stack trace. Cached weights, checkpoints, folders and a
    random init cost a file lookup."""
    family = models.family(config.source.family)
    if family.weights_status(config.source).cached is False:
        family.fetch(config.source)


def input_kind(data_type: DataType, input_type: InputType = "auto", name: str = "") -> str:
    """On the driver: "bytes", "path" or "image" for a column's Spark type, or a ConfigError.

    A wrong column fails at analysis, before any job, naming Spark's type (and the column,
    `name`, when given).
    """
    column = f"the input column {name!r}" if name else "the input column"
    if isinstance(data_type, BinaryType):
        kind = "bytes"
    elif isinstance(data_type, StringType):
        kind = "path"
    elif isinstance(data_type, StructType) and set(IMAGE_FIELDS) <= set(data_type.fieldNames()):
        kind = "image"
    else:
        raise ConfigError(
            f"{column} has Spark type {data_type.simpleString()}: featurex expects "
            f"binary image bytes (binaryFile's 'content'), a string column of paths, or the "
            f"struct of spark.read.format('image') (its 'image' column)"
        )
    if input_type not in ("auto", kind):
        raise ConfigError(
            f"{opt('input_type', input_type)}, but {column} has Spark type "
            f"{data_type.simpleString()}, which is {opt('input_type', kind)}"
        )
    return kind


def features_udf(
    config: ExtractorConfig,
    with_errors: bool = False,
    input_type: InputType = "auto",
    named: bool = False,
) -> Any:
    """The UDF itself. Its function closes over `config` and plain flags, nothing else.
    Weights that cannot be had fail here, on the driver (`check_weights`).

    An Arrow UDF where pyspark has them (4.1+), else a pandas UDF (`_compat.has_arrow_udfs`):
    both are scalar iterators, one batch out per batch in, and differ only in how a batch of
    features goes back to Arrow. Use its column once (`withColumn`, then `F.col`): each use
    of a nondeterministic column is a pass of the model.
    """
    check_weights(config)
    arrow = has_arrow_udfs()

    def features(batches: Iterator[Any]) -> Iterator[Any]:
        for matrix, errors in _stream(config, batches, input_type, named):
            yield (_to_arrow if arrow else _to_pandas)(matrix, errors, with_errors)

    # The UDF's name, which Spark shows in the column's name: features_only(content).
    features.__name__ = features.__qualname__ = (
        "features_and_errors" if with_errors else "features_only"
    )

    udf = _scalar_iter_udf(
        features, named, arrow, WITH_ERRORS_TYPE if with_errors else FEATURES_TYPE
    )
    # Nondeterministic, so that the optimizer never copies the model's UDF: a deterministic
    # one is pushed below a filter on its output (`features IS NOT NULL`) with a copy, and
    # every image runs through the model twice, once for the filter and once for the column.
    return udf.asNondeterministic()


def _scalar_iter_udf(fn: Any, named: bool, arrow: bool, return_type: DataType) -> Any:
    # pyspark tells the UDF kind from the annotations: an iterator of one column (a tuple of
    # two with a name column) in, one batch out per batch in.
    if arrow:
        import pyarrow as pa
        from pyspark.sql.pandas.functions import arrow_udf as _arrow_udf

        arrow_udf: Any = _arrow_udf  # its stubs have no overload for an iterator of arrays
        one: Any = pa.Array
        fn.__annotations__ = {
            "batches": Iterator[tuple[one, one]] if named else Iterator[one],
            "return": Iterator[one],
        }
        return arrow_udf(fn, return_type)
    out = pd.DataFrame if return_type == WITH_ERRORS_TYPE else pd.Series
    fn.__annotations__ = {
        "batches": Iterator[tuple[pd.Series, pd.Series]] if named else Iterator[pd.Series],
        "return": Iterator[out],  # type: ignore[valid-type]
    }
    return pandas_udf(fn, return_type)


def _to_arrow(matrix: np.ndarray, errors: list[str | None], with_errors: bool) -> Any:
    """(n, D) features -> one Arrow list array over the matrix's buffer (no copy per row),
    null where a row failed; with `with_errors`, a struct of it and the reasons."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_type

    n, dim = matrix.shape
    failed = pa.array([e is not None for e in errors], pa.bool_())
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    values = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
    features = pa.ListArray.from_arrays(
        offsets, values, type=to_arrow_type(FEATURES_TYPE), mask=failed
    )
    if not with_errors:
        return features
    reasons = pa.array(errors, pa.string())
    return pa.StructArray.from_arrays([features, reasons], names=["features", "error"])


def _to_pandas(matrix: np.ndarray, errors: list[str | None], with_errors: bool) -> Any:
    """(n, D) features -> an object Series of row arrays (None where a row failed)."""
    rows = pd.Series(
        [None if e is not None else row for row, e in zip(matrix, errors, strict=True)],
        dtype=object,
    )
    return pd.DataFrame({"features": rows, "error": errors}) if with_errors else rows


def _stream(
    config: ExtractorConfig, batches: Iterator[Any], input_type: InputType, named: bool
) -> Iterator[tuple[np.ndarray, list[str | None]]]:
    """Runs in the Python worker: Arrow batches in (Arrow arrays, or pandas for a pandas
    UDF), (n, D) features and reasons out.

    The model is loaded once a batch with a value has arrived and its type is checked: an
    empty partition loads nothing, and a wrong column fails in milliseconds, not after a load
    (a partition of nulls only still loads it, to give each row its reason).
    """
    items: Iterator[tuple[list[object], list[str | None]]] = (
        (_items(b[0], input_type), _values(b[1])) if named else (_items(b, input_type), [])
        for b in batches
    )
    # Hold batches until one has a value, whose type `_items` checks: an empty batch (or one
    # of nulls) says nothing about the column's type.
    leading = []
    for item in items:
        leading.append(item)
        if any(value is not None for value in item[0]):
            break
    if not any(inputs for inputs, _ in leading):
        return  # no rows: nothing to load
    quiet_libraries()  # no progress bars from every worker in the job's output
    extractor = FeatureExtractor.from_config(config, _task_device(config))
    _load_and_settle(extractor)
    stream = itertools.chain(leading, items)
    if named:  # the engine reads inputs and names in lockstep: the tee holds one pair
        left, right = itertools.tee(stream)
        yield from extractor.extract_batches((i for i, _ in left), (n for _, n in right))
    else:
        yield from extractor.extract_batches(i for i, _ in stream)


def _values(column: Any) -> list[Any]:
    """A batch's column as Python values: an Arrow array's or a pandas Series'."""
    return column.to_pylist() if hasattr(column, "to_pylist") else column.tolist()  # type: ignore[no-any-return]


def _load_and_settle(extractor: FeatureExtractor) -> None:
    """Load the task's model; after a load, move every live object out of the GC's reach.

    pyspark's daemon runs a full `gc.collect()` after each task of a reused worker. With
    torch, torchvision, pandas and a model loaded that walks about 400,000 objects, 180 ms
    (measured): 7% of a 32-image ResNet-50 task in fp32, 13% in bf16. `gc.freeze()` after the
    load leaves it the objects created since. What it freezes (imports, the model) lives as
    long as the worker anyway; unfreezing first lets a model the cache has just evicted go.
    """
    if extractor._is_cached():  # the usual case: nothing to do, and no extra hit counted
        return
    _ = extractor.loaded
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _task_device(config: ExtractorConfig) -> str | None:
    """The GPU Spark assigned to this task (its `gpu` resource), if any."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return None
    gpus = context.resources().get("gpu")
    return task_device(
        config.device,
        list(gpus.addresses) if gpus is not None else [],
        context.partitionId(),
        os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


def _items(batch: Any, input_type: InputType) -> list[object]:
    """One Arrow batch as engine inputs, refusing a column of the wrong type clearly."""
    structs = _structs(batch)
    if structs is not None:  # Spark's image struct
        missing = [f for f in IMAGE_FIELDS if f not in structs[0]]
        if missing or input_type not in ("auto", "image"):
            raise TypeError(_wrong_type(input_type, f"struct<{','.join(structs[0])}>"))
        height, width, channels, data = (structs[1][f] for f in IMAGE_FIELDS)
        origins = structs[1].get("origin", itertools.repeat(None))
        return [
            None
            if d is None or h is None or pd.isna(h)
            else PixelRecord(int(h), int(w), int(c), bytes(d), o)
            for h, w, c, d, o in zip(height, width, channels, data, origins, strict=False)
        ]
    values = _values(batch)
    first = next((v for v in values if v is not None), None)
    if first is None:
        return values
    kind = (
        "bytes"
        if isinstance(first, bytes | bytearray | memoryview)
        else "path"
        if isinstance(first, str)
        else None
    )
    if kind is None or input_type not in ("auto", kind):
        spark_type = _SPARK_TYPES.get(type(first), type(first).__name__)
        raise TypeError(_wrong_type(input_type, f"{spark_type} (for example {str(first)[:60]!r})"))
    return values


def _structs(batch: Any) -> tuple[list[str], dict[str, list[Any]]] | None:
    """A struct column's field names and values (a null struct: None in every field), or
    None for another column. A pandas UDF gets a struct as a DataFrame, an Arrow UDF as a
    StructArray."""
    import pyarrow as pa

    if isinstance(batch, pd.DataFrame):
        return list(batch.columns), {c: batch[c].tolist() for c in batch.columns}
    if not (isinstance(batch, pa.Array) and pa.types.is_struct(batch.type)):
        return None
    names = [batch.type.field(i).name for i in range(batch.type.num_fields)]
    valid = batch.is_valid().to_pylist()
    fields = {
        name: [v if ok else None for v, ok in zip(batch.field(i).to_pylist(), valid, strict=True)]
        for i, name in enumerate(names)
    }
    return names, fields


_SPARK_TYPES = {
    bytes: "binary",
    str: "string",
    int: "an integral type",
    float: "double or float",
    bool: "boolean",
    list: "array",
    np.ndarray: "array",
}


def _wrong_type(input_type: str, got: str) -> str:
    expected = {
        "auto": "binary image bytes, a string column of paths, or Spark's image struct",
        "bytes": "binary image bytes (for example the 'content' column of binaryFile)",
        "path": "a string column of paths or URIs",
        "image": "the struct of spark.read.format('image') (its 'image' column)",
    }[input_type]
    return (
        f"featurex.image_features (input_type={input_type!r}) expects {expected}, "
        f"but the column holds {got}"
    )
