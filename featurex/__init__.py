"""featurex: image feature vectors from PyTorch CNNs on Apache Spark.

Typical use: ``df.withColumn("features", featurex.image_features("content"))`` on a DataFrame
read with ``spark.read.format("binaryFile")``.
"""

from . import _compat
from ._cache import cache_info
from ._listing import list_images
from .compat import ImageVectorizer
from .config import ExtractorConfig
from .errors import FeatureXError
from .extractor import FeatureExtractor

# pyspark is the platform's, or absent where only the engine is used: without it the Spark
# parts are stand-ins that raise a one-line error naming what to install.
try:
    from .spark import image_features
except ImportError as exc:
    if not _compat.is_pyspark_import_error(exc):
        raise
    image_features = _compat.unavailable("image_features", exc)
try:
    from .ml import ImageFeaturizer
except ImportError as exc:
    if not _compat.is_pyspark_import_error(exc):
        raise
    ImageFeaturizer = _compat.unavailable("ImageFeaturizer", exc)  # type: ignore[misc,assignment]

__version__ = "0.1.0"

# From vectors to answers (featurex.similar): loaded on first use, so `import featurex` stays
# light; without pyspark each name is a stand-in naming what to install.
_SIMILAR = ("near_duplicates", "nearest_neighbors", "pair_recall", "similar_pairs")


def __getattr__(name: str) -> object:
    if name not in _SIMILAR:
        raise AttributeError(f"module 'featurex' has no attribute {name!r}")
    try:
        from . import similar
    except ImportError as exc:
        if not _compat.is_pyspark_import_error(exc):
            raise
        return _compat.unavailable(name, exc)
    return getattr(similar, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_SIMILAR})


__all__ = [
    "ExtractorConfig",
    "FeatureExtractor",
    "FeatureXError",
    "ImageFeaturizer",
    "ImageVectorizer",
    "__version__",
    "cache_info",
    "image_features",
    "list_images",
    "near_duplicates",
    "nearest_neighbors",
    "pair_recall",
    "similar_pairs",
]
