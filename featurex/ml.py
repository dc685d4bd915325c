"""`ImageFeaturizer`: featurex as a `pyspark.ml` Transformer, for ML Pipelines.

The stage holds Params and nothing else (no session, no model), so it pickles small, saves
and loads with `DefaultParamsWritable`/`DefaultParamsReadable`, and runs under Spark
Connect. Its params are checked on the driver by `ExtractorConfig`, the same validation as
`featurex.image_features`, when the stage is built and again before any job of `transform`.

A failed image is what Spark's own feature stages call an invalid entry: `handleInvalid`
keeps it as a null (the default, featurex's `on_error="null"`), drops its row ("skip", what an
MLlib estimator next in the pipeline needs: it refuses null vectors) or fails the task
("error", `on_error="raise"`). `errorCol` adds the reason beside the features.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasHandleInvalid, HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import functions as F

from ._types import DECODES, PRECISIONS
from ._words import ParamWords, camel, speaking
from .config import DEFAULT_MAX_PIXELS, OPTIONS, ExtractorConfig
from .errors import ConfigError
from .spark import INPUT_TYPES, InputType, check_input, features_udf

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

OUTPUT_TYPES = ("array", "vector")
# Spark's own words for invalid entries (StringIndexer, VectorAssembler), and the engine's
# on_error that each needs: "skip" drops the rows that "keep" would hold as nulls.
HANDLE_INVALID = ("error", "keep", "skip")
_ON_ERROR = {"error": "raise", "keep": "null", "skip": "null"}


def to_vector(features: Column) -> Column:
    """array<float> -> MLlib DenseVector, null stays null (array_to_vector fails on null)."""
    from pyspark.ml.functions import array_to_vector

    # Spark evaluates the features UDF once here: identical Python UDF calls are deduplicated.
    return F.when(features.isNotNull(), array_to_vector(features))


def _param(name: str, doc: str, converter: Any = TypeConverters.toString) -> Param[Any]:
    return Param(Params._dummy(), name, doc, typeConverter=converter)


def _or(choices: tuple[str, ...]) -> str:
    return f"{', '.join(choices[:-1])} or {choices[-1]}"


_INT, _BOOL = TypeConverters.toInt, TypeConverters.toBoolean
# A param for every option of ExtractorConfig, camelCased, but `transform`: a callable is no
# JSON a saved stage could hold.
PARAMS = {name: camel(name) for name in ("model", "weights", *OPTIONS) if name != "transform"}
# Errors raised while the stage validates name its params (batchSize, weights='none').
WORDS = ParamWords({**PARAMS, "input_type": "inputType", "output_type": "outputType"})
# The options whose default is None, and errorCol: a param left unset (params hold no None).
_UNSET_IS_NONE = frozenset(
    camel(f.name) for f in dataclasses.fields(ExtractorConfig) if f.init and f.default is None
) | {"errorCol"}


def _config_defaults() -> dict[str, Any]:
    """Each param's default: the config's own."""
    fields = {f.name: f for f in dataclasses.fields(ExtractorConfig)}
    return {param: fields[name].default for name, param in PARAMS.items()}


class ImageFeaturizer(
    Transformer,
    HasInputCol,
    HasOutputCol,
    HasHandleInvalid,
    DefaultParamsReadable["ImageFeaturizer"],
    DefaultParamsWritable,
):
    """Adds a column of image feature vectors computed from `inputCol`.

    >>> featurizer = ImageFeaturizer(inputCol="content", model="resnet18", weights="none",
    ...                              outputType="vector")
    >>> Pipeline(stages=[featurizer, LogisticRegression()]).fit(train)

    `outputType="array"` gives `array<float>`; `"vector"` an MLlib `DenseVector` (through
    `pyspark.ml.functions.array_to_vector`), what MLlib estimators expect. An image that
    cannot be used is a null with `handleInvalid="keep"` (the default), a dropped row with
    `"skip"` (MLlib estimators refuse null vectors) and a failed task with `"error"`;
    `errorCol` names a column for the reason (null where the image was used). There is a
    param for each of `ExtractorConfig`'s options, camelCased, except `transform`: a Python
    callable is no param a saved stage could hold, so the stage uses the family's own
    preprocessing.
    """

    model: Param[str] = _param(
        "model", "a torchvision model name (resnet50), hf:<repo or folder>, timm:<name> or "
        "open_clip:<arch>",
    )  # fmt: skip
    weights: Param[str] = _param(
        "weights", "DEFAULT (the family's pretrained weights), a weights name or tag, a "
        "checkpoint path, or 'none' for a seeded random init",
    )  # fmt: skip
    seed: Param[int] = _param("seed", "the random-init seed, with weights 'none'", _INT)
    batchSize: Param[int] = _param(
        "batchSize", "images per forward pass (unset: the device's default)", _INT
    )
    device: Param[str] = _param("device", "auto, cpu, cuda or cuda:N")
    precision: Param[str] = _param(
        "precision", f"{_or(PRECISIONS)} (bf16, fp16: autocast; int8: quantized, on the CPU)"
    )
    calibration: Param[str] = _param(
        "calibration", "with precision int8: a folder of images to calibrate on (unset: "
        "featurex's own)",
    )  # fmt: skip
    decodeThreads: Param[int] = _param(
        "decodeThreads", "threads decoding images per task (unset: the device's default)", _INT
    )
    decode: Param[str] = _param(
        "decode", f"where images are decoded and preprocessed: {_or(DECODES)} (auto: the GPU "
        "when the model runs on CUDA)",
    )  # fmt: skip
    readAhead: Param[int] = _param(
        "readAhead", "path inputs: files read at once ahead of decoding (unset: 16)", _INT
    )
    normalize: Param[bool] = _param("normalize", "L2-normalized feature rows (cosine-ready)", _BOOL)
    onError: Param[str] = _param(
        "onError", "null: an undecodable image gives null; raise: fail the task naming the row"
    )
    maxPixels: Param[int] = _param(
        "maxPixels", "images with more pixels are refused from their header", _INT
    )
    fastDecode: Param[bool] = _param(
        "fastDecode", "decode big JPEGs at a reduced DCT scale (unset: on for int8 only)", _BOOL
    )
    optimize: Param[bool] = _param(
        "optimize", "on the CPU, a traced, frozen and fused graph (unset: the family's default)",
        _BOOL,
    )  # fmt: skip
    trustCheckpoint: Param[bool] = _param(
        "trustCheckpoint", "allow a pickled full-model checkpoint, which runs code when loaded",
        _BOOL,
    )  # fmt: skip
    outputType: Param[str] = _param(
        "outputType", "array: array<float>; vector: an MLlib DenseVector"
    )
    inputType: Param[str] = _param(
        "inputType", "auto (from the column type), bytes, image (Spark's image struct) or path"
    )
    handleInvalid: Param[str] = _param(
        "handleInvalid", "what to do with an image that cannot be used: keep (a null in "
        "outputCol), skip (drop its row: MLlib estimators refuse null vectors) or error (fail "
        "the task naming the reason, as onError='raise')",
    )  # fmt: skip
    errorCol: Param[str] = _param(
        "errorCol", "a column for the reason an image could not be used, null where it was "
        "(unset: no such column)",
    )  # fmt: skip

    _input_kwargs: dict[str, Any]  # set by @keyword_only

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str = "content",
        outputCol: str = "features",
        model: str = "resnet50",
        weights: str | None = "DEFAULT",
        seed: int = 0,
        batchSize: int | None = None,
        device: str = "auto",
        precision: str = "fp32",
        calibration: str | None = None,
        decodeThreads: int | None = None,
        decode: str = "auto",
        readAhead: int | None = None,
        normalize: bool = False,
        onError: str = "null",
        maxPixels: int = DEFAULT_MAX_PIXELS,
        fastDecode: bool | None = None,
        optimize: bool | None = None,
        trustCheckpoint: bool = False,
        outputType: str = "array",
        inputType: str = "auto",
        handleInvalid: str = "keep",
        errorCol: str | None = None,
    ) -> None:
        super().__init__()
        # The config's own defaults; an option whose default is None is a param left unset.
        # handleInvalid keeps failed rows by default, as on_error="null" does: a stage saved
        # before the param existed loads with the behaviour it was saved with.
        self._setDefault(
            inputCol="content", outputCol="features", outputType="array", inputType="auto",
            handleInvalid="keep",
            **{p: v for p, v in _config_defaults().items() if v is not None},
        )  # fmt: skip
        self._apply(self._input_kwargs)
        self.extractor_config()  # fail here, not in the first job

    @keyword_only
    def setParams(
        self,
        *,
        inputCol: str | None = None,
        outputCol: str | None = None,
        model: str | None = None,
        weights: str | None = None,
        seed: int | None = None,
        batchSize: int | None = None,
        device: str | None = None,
        precision: str | None = None,
        calibration: str | None = None,
        decodeThreads: int | None = None,
        decode: str | None = None,
        readAhead: int | None = None,
        normalize: bool | None = None,
        onError: str | None = None,
        maxPixels: int | None = None,
        fastDecode: bool | None = None,
        optimize: bool | None = None,
        trustCheckpoint: bool | None = None,
        outputType: str | None = None,
        inputType: str | None = None,
        handleInvalid: str | None = None,
        errorCol: str | None = None,
    ) -> ImageFeaturizer:
        """Sets the given params and checks the result."""
        self._apply(self._input_kwargs)
        self.extractor_config()
        return self

    def _apply(self, kwargs: dict[str, Any]) -> ImageFeaturizer:
        # Saved params are JSON, read back through the type converters, which refuse None:
        # store weights=None as "none", and None for an optional option as unset.
        kwargs = dict(kwargs)
        if "weights" in kwargs and kwargs["weights"] is None:
            kwargs["weights"] = "none"
        for name in [n for n, v in kwargs.items() if v is None and n in _UNSET_IS_NONE]:
            del kwargs[name]
            self.clear(self.getParam(name))
        return self._set(**kwargs)

    def extractor_config(self) -> ExtractorConfig:
        """The validated `ExtractorConfig` for the current params; raises `ConfigError`."""
        with speaking(WORDS):
            output_type = self.getOutputType()
            if output_type not in OUTPUT_TYPES:
                raise ConfigError(
                    f"unknown outputType {output_type!r}: expected 'array' or 'vector'"
                )
            input_type = self.getInputType()
            if input_type not in INPUT_TYPES:
                expected = ", ".join(repr(t) for t in INPUT_TYPES)
                raise ConfigError(f"unknown inputType {input_type!r}: expected one of {expected}")
            error_col = self.getErrorCol()
            if error_col is not None and error_col == self.getOutputCol():
                raise ConfigError(
                    f"errorCol and outputCol are both {error_col!r}: name the reasons' column "
                    "apart from the features'"
                )
            options: dict[str, Any] = {
                name: self._optional(self.getParam(param)) for name, param in PARAMS.items()
            }
            options["on_error"] = self._on_error()
            return ExtractorConfig(**options)

    def _on_error(self) -> str:
        """The engine's on_error: the one handleInvalid needs, or onError's where only that
        is set (its older spelling: "raise" is handleInvalid="error"). Both set, they agree."""
        handle = self.getHandleInvalid()
        if handle not in HANDLE_INVALID:
            expected = ", ".join(repr(h) for h in HANDLE_INVALID)
            raise ConfigError(f"unknown handleInvalid {handle!r}: expected one of {expected}")
        if not self.isSet(self.onError):
            return _ON_ERROR[handle]
        on_error = self.getOnError()
        if self.isSet(self.handleInvalid) and on_error in _ON_ERROR.values():
            if on_error != _ON_ERROR[handle]:
                raise ConfigError(
                    f"handleInvalid={handle!r} and onError={on_error!r} disagree: "
                    f"handleInvalid={handle!r} needs onError={_ON_ERROR[handle]!r}; set "
                    "handleInvalid alone (onError='raise' is handleInvalid='error')"
                )
        return on_error  # an unknown value: ExtractorConfig names it

    def _transform(self, dataset: DataFrame) -> DataFrame:
        config = self.extractor_config()  # on the driver, before any job
        # A column of the wrong type fails here, naming its Spark type (schema only, no job).
        input_col, input_type = self.getInputCol(), cast(InputType, self.getInputType())
        with speaking(WORDS):
            check_input(dataset, input_col, input_type)
        output_col, error_col = self.getOutputCol(), self.getErrorCol()
        udf = features_udf(config, with_errors=error_col is not None, input_type=input_type)
        column: Column = udf(input_col)  # nondeterministic: a later filter never copies it
        if error_col is None:
            out = dataset.withColumn(output_col, column)
        else:  # one call for both: the struct, then its fields
            struct = f"__featurex_{self.uid}"
            out = dataset.withColumn(struct, column)
            out = out.withColumn(output_col, F.col(struct)["features"])
            out = out.withColumn(error_col, F.col(struct)["error"]).drop(struct)
        if self.getOutputType() == "vector":
            out = out.withColumn(output_col, to_vector(F.col(output_col)))
        if self.getHandleInvalid() == "skip":
            out = out.where(F.col(output_col).isNotNull())
        return out

    # Setters and getters, in the pyspark.ml style. A getter of an option whose default is
    # None returns None while its param is unset.
    def _optional(self, param: Param[Any]) -> Any:
        return self.getOrDefault(param) if self.isDefined(param) else None

    def setInputCol(self, value: str) -> ImageFeaturizer:
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> ImageFeaturizer:
        return self._set(outputCol=value)

    def setModel(self, value: str) -> ImageFeaturizer:
        return self._set(model=value)

    def getModel(self) -> str:
        return str(self.getOrDefault(self.model))

    def setWeights(self, value: str | None) -> ImageFeaturizer:
        return self._apply({"weights": value})

    def getWeights(self) -> str:
        """The weights: a torchvision name, a checkpoint path, or "none" (random init)."""
        return str(self.getOrDefault(self.weights))

    def setSeed(self, value: int) -> ImageFeaturizer:
        return self._set(seed=value)

    def getSeed(self) -> int:
        return int(self.getOrDefault(self.seed))

    def setBatchSize(self, value: int | None) -> ImageFeaturizer:
        return self._apply({"batchSize": value})

    def getBatchSize(self) -> int | None:
        """The batch size, or None (unset) for the device's default."""
        value = self._optional(self.batchSize)
        return None if value is None else int(value)

    def setDevice(self, value: str) -> ImageFeaturizer:
        return self._set(device=value)

    def getDevice(self) -> str:
        return str(self.getOrDefault(self.device))

    def setPrecision(self, value: str) -> ImageFeaturizer:
        return self._set(precision=value)

    def getPrecision(self) -> str:
        return str(self.getOrDefault(self.precision))

    def setCalibration(self, value: str | None) -> ImageFeaturizer:
        return self._apply({"calibration": value})

    def getCalibration(self) -> str | None:
        value = self._optional(self.calibration)
        return None if value is None else str(value)

    def setDecodeThreads(self, value: int | None) -> ImageFeaturizer:
        return self._apply({"decodeThreads": value})

    def getDecodeThreads(self) -> int | None:
        value = self._optional(self.decodeThreads)
        return None if value is None else int(value)

    def setDecode(self, value: str) -> ImageFeaturizer:
        return self._set(decode=value)

    def getDecode(self) -> str:
        return str(self.getOrDefault(self.decode))

    def setReadAhead(self, value: int | None) -> ImageFeaturizer:
        return self._apply({"readAhead": value})

    def getReadAhead(self) -> int | None:
        value = self._optional(self.readAhead)
        return None if value is None else int(value)

    def setNormalize(self, value: bool) -> ImageFeaturizer:
        return self._set(normalize=value)

    def getNormalize(self) -> bool:
        return bool(self.getOrDefault(self.normalize))

    def setOnError(self, value: str) -> ImageFeaturizer:
        return self._set(onError=value)

    def getOnError(self) -> str:
        return str(self.getOrDefault(self.onError))

    def setMaxPixels(self, value: int) -> ImageFeaturizer:
        return self._set(maxPixels=value)

    def getMaxPixels(self) -> int:
        return int(self.getOrDefault(self.maxPixels))

    def setFastDecode(self, value: bool | None) -> ImageFeaturizer:
        return self._apply({"fastDecode": value})

    def getFastDecode(self) -> bool | None:
        value = self._optional(self.fastDecode)
        return None if value is None else bool(value)

    def setOptimize(self, value: bool | None) -> ImageFeaturizer:
        return self._apply({"optimize": value})

    def getOptimize(self) -> bool | None:
        value = self._optional(self.optimize)
        return None if value is None else bool(value)

    def setTrustCheckpoint(self, value: bool) -> ImageFeaturizer:
        return self._set(trustCheckpoint=value)

    def getTrustCheckpoint(self) -> bool:
        return bool(self.getOrDefault(self.trustCheckpoint))

    def setOutputType(self, value: str) -> ImageFeaturizer:
        return self._set(outputType=value)

    def getOutputType(self) -> str:
        return str(self.getOrDefault(self.outputType))

    def setInputType(self, value: str) -> ImageFeaturizer:
        return self._set(inputType=value)

    def getInputType(self) -> str:
        return str(self.getOrDefault(self.inputType))

    def setHandleInvalid(self, value: str) -> ImageFeaturizer:
        return self._set(handleInvalid=value)

    def getHandleInvalid(self) -> str:
        """keep (failed images are nulls), skip (their rows are dropped) or error."""
        return str(self.getOrDefault(self.handleInvalid))

    def setErrorCol(self, value: str | None) -> ImageFeaturizer:
        return self._apply({"errorCol": value})

    def getErrorCol(self) -> str | None:
        """The column of reasons, or None (unset) for none."""
        value = self._optional(self.errorCol)
        return None if value is None else str(value)
