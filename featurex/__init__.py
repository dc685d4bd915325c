"""featurex: image feature vectors from PyTorch CNNs on Apache Spark.

Typical use: ``df.withColumn("features", featurex.image_features("content"))`` on a DataFrame
read with ``spark.read.format("binaryFile")``.
"""

from ._cache import cache_info
from .compat import ImageVectorizer
from .config import ExtractorConfig
from .errors import FeatureXError
from .extractor import FeatureExtractor
from .ml import ImageFeaturizer
from .spark import image_features

__version__ = "0.1.0"

__all__ = [
    "ExtractorConfig",
    "FeatureExtractor",
    "FeatureXError",
    "ImageFeaturizer",
    "ImageVectorizer",
    "__version__",
    "cache_info",
    "image_features",
]
