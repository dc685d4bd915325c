"""`ImageFeaturizer`: featurex as a `pyspark.ml` Transformer, for ML Pipelines.

The stage holds Params and nothing else (no session, no model), so it pickles small, saves
and loads with `DefaultParamsWritable`/`DefaultParamsReadable`, and runs under Spark
Connect. Its params are checked on the driver by `ExtractorConfig`, the same validation as
`featurex.image_features`, when the stage is built and again before any job of `transform`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

from .config import ExtractorConfig
from .errors import ConfigError
from .spark import INPUT_TYPES, InputType, features_column, input_kind

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

OUTPUT_TYPES = ("array", "vector")


def to_vector(features: Column) -> Column:
    """array<float> -> MLlib DenseVector, null stays null (array_to_vector fails on null)."""
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    # Spark evaluates the features UDF once here: identical Python UDF calls are deduplicated.
    return F.when(features.isNotNull(), array_to_vector(features))


def _param(name: str, doc: str, converter: Any = TypeConverters.toString) -> Param[Any]:
    return Param(Params._dummy(), name, doc, typeConverter=converter)


class ImageFeaturizer(
    Transformer,
    HasInputCol,
    HasOutputCol,
    DefaultParamsReadable["ImageFeaturizer"],
    DefaultParamsWritable,
):
    """Adds a column of image feature vectors computed from `inputCol`.

    >>> featurizer = ImageFeaturizer(inputCol="content", model="resnet18", weights="none",
    ...                              outputType="vector")
    >>> Pipeline(stages=[featurizer, LogisticRegression()]).fit(train)

    `outputType="array"` gives `array<float>`; `"vector"` an MLlib `DenseVector` (through
    `pyspark.ml.functions.array_to_vector`), what MLlib estimators expect. Images that cannot
    be decoded give null (or fail the task with `onError="raise"`).
    """

    model: Param[str] = _param(
        "model", "a torchvision model name (resnet50), hf:<repo or folder>, timm:<name> or "
        "open_clip:<arch>",
    )  # fmt: skip
    weights: Param[str] = _param(
        "weights", "DEFAULT (the family's pretrained weights), a weights name or tag, a "
        "checkpoint path, or 'none' for a seeded random init",
    )  # fmt: skip
    batchSize: Param[int] = _param(
        "batchSize", "images per forward pass (unset: the device's default)", TypeConverters.toInt
    )
    device: Param[str] = _param("device", "auto, cpu, cuda or cuda:N")
    precision: Param[str] = _param("precision", "fp32, bf16 or fp16")
    normalize: Param[bool] = _param(
        "normalize", "L2-normalized feature rows (cosine-ready)", TypeConverters.toBoolean
    )
    onError: Param[str] = _param(
        "onError", "null: an undecodable image gives null; raise: fail the task naming the row"
    )
    outputType: Param[str] = _param(
        "outputType", "array: array<float>; vector: an MLlib DenseVector"
    )
    inputType: Param[str] = _param(
        "inputType", "auto (from the column type), bytes, image (Spark's image struct) or path"
    )

    _input_kwargs: dict[str, Any]  # set by @keyword_only

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str = "content",
        outputCol: str = "features",
        model: str = "resnet50",
        weights: str | None = "DEFAULT",
        batchSize: int | None = None,
        device: str = "auto",
        precision: str = "fp32",
        normalize: bool = False,
        onError: str = "null",
        outputType: str = "array",
        inputType: str = "auto",
    ) -> None:
        super().__init__()
        self._setDefault(
            inputCol="content", outputCol="features", model="resnet50", weights="DEFAULT",
            device="auto", precision="fp32", normalize=False, onError="null",
            outputType="array", inputType="auto",
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
        batchSize: int | None = None,
        device: str | None = None,
        precision: str | None = None,
        normalize: bool | None = None,
        onError: str | None = None,
        outputType: str | None = None,
        inputType: str | None = None,
    ) -> ImageFeaturizer:
        """Sets the given params and checks the result."""
        self._apply(self._input_kwargs)
        self.extractor_config()
        return self

    def _apply(self, kwargs: dict[str, Any]) -> ImageFeaturizer:
        # Saved params are JSON, read back through the type converters, which refuse None:
        # store weights=None as "none" and batchSize=None as unset.
        kwargs = dict(kwargs)
        if "weights" in kwargs and kwargs["weights"] is None:
            kwargs["weights"] = "none"
        if "batchSize" in kwargs and kwargs["batchSize"] is None:
            del kwargs["batchSize"]
            self.clear(self.batchSize)
        return self._set(**kwargs)

    def extractor_config(self) -> ExtractorConfig:
        """The validated `ExtractorConfig` for the current params; raises `ConfigError`."""
        output_type = self.getOutputType()
        if output_type not in OUTPUT_TYPES:
            raise ConfigError(f"unknown outputType {output_type!r}: expected 'array' or 'vector'")
        input_type = self.getInputType()
        if input_type not in INPUT_TYPES:
            expected = ", ".join(repr(t) for t in INPUT_TYPES)
            raise ConfigError(f"unknown inputType {input_type!r}: expected one of {expected}")
        return ExtractorConfig(
            model=self.getModel(),
            weights=self.getWeights(),
            batch_size=self.getBatchSize(),
            device=self.getDevice(),
            precision=self.getPrecision(),  # type: ignore[arg-type]  # checked by the config
            normalize=self.getNormalize(),
            on_error=self.getOnError(),  # type: ignore[arg-type]
        )

    def _transform(self, dataset: DataFrame) -> DataFrame:
        config = self.extractor_config()  # on the driver, before any job
        # A column of the wrong type fails here, naming its Spark type (schema only, no job).
        input_col, input_type = self.getInputCol(), cast(InputType, self.getInputType())
        input_kind(dataset.select(input_col).schema.fields[0].dataType, input_type)
        column = features_column(input_col, config, input_type=input_type)
        if self.getOutputType() == "vector":
            column = to_vector(column)
        return dataset.withColumn(self.getOutputCol(), column)

    # Setters and getters, in the pyspark.ml style.
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

    def setBatchSize(self, value: int | None) -> ImageFeaturizer:
        return self._apply({"batchSize": value})

    def getBatchSize(self) -> int | None:
        """The batch size, or None (unset) for the device's default."""
        if not self.isDefined(self.batchSize):
            return None
        return int(self.getOrDefault(self.batchSize))

    def setDevice(self, value: str) -> ImageFeaturizer:
        return self._set(device=value)

    def getDevice(self) -> str:
        return str(self.getOrDefault(self.device))

    def setPrecision(self, value: str) -> ImageFeaturizer:
        return self._set(precision=value)

    def getPrecision(self) -> str:
        return str(self.getOrDefault(self.precision))

    def setNormalize(self, value: bool) -> ImageFeaturizer:
        return self._set(normalize=value)

    def getNormalize(self) -> bool:
        return bool(self.getOrDefault(self.normalize))

    def setOnError(self, value: str) -> ImageFeaturizer:
        return self._set(onError=value)

    def getOnError(self) -> str:
        return str(self.getOrDefault(self.onError))

    def setOutputType(self, value: str) -> ImageFeaturizer:
        return self._set(outputType=value)

    def getOutputType(self) -> str:
        return str(self.getOrDefault(self.outputType))

    def setInputType(self, value: str) -> ImageFeaturizer:
        return self._set(inputType=value)

    def getInputType(self) -> str:
        return str(self.getOrDefault(self.inputType))
