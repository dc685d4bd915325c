"""`ImageVectorizer`: the seed's class, done right.

The seed held `self.spark` and a model and registered `udf(lambda x: self.extract_features(x))`;
cloudpickle then dragged the SparkSession into the closure and the job failed with SPARK-5063.
This class holds only a frozen config. Its model lives in the process cache, so the object
pickles to a few hundred bytes, and Spark ships the config, never `self`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._types import ModelFactory
from .config import ExtractorConfig, with_config_options
from .extractor import FeatureExtractor

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


class ImageVectorizer:
    """Feature vectors for single images and for whole DataFrames.

    `options` are `ExtractorConfig`'s fields, as for `featurex.image_features` (batch_size,
    device, precision, normalize, ...).
    """

    @with_config_options
    def __init__(
        self,
        model: str | ModelFactory = "resnet50",
        weights: str | None = "DEFAULT",
        **options: Any,
    ) -> None:
        self.config = ExtractorConfig.from_options(model, weights, options)

    def extract_features(self, image_bytes: bytes) -> list[float]:
        """The feature vector of one encoded image, as a list of floats.

        Raises ValueError with the reason when the bytes are not a decodable image.
        """
        features, errors = FeatureExtractor.from_config(self.config).extract([image_bytes])
        if errors[0] is not None:
            raise ValueError(f"cannot extract features: {errors[0]}")
        return [float(v) for v in features[0]]

    def process_images(
        self, df: DataFrame, input_col: str = "content", output_col: str = "features"
    ) -> DataFrame:
        """`df` with `output_col` holding the features of the images in `input_col` (bytes,
        paths or Spark's image struct); a column of another type fails here, before any job."""
        from .spark import check_input, features_column

        check_input(df, input_col)
        return df.withColumn(output_col, features_column(input_col, self.config))

    def __repr__(self) -> str:
        return f"ImageVectorizer({self.config.describe()})"
