from __future__ import annotations

import pickle
from importlib.metadata import version

import featurex as fx


def test_public_names_are_exactly_the_sorted_all() -> None:
    public = {n for n in dir(fx) if not n.startswith("_")} - {
        "cli", "compat", "config", "decode", "errors", "extractor", "ml", "models", "similar",
        "spark",
    }  # fmt: skip
    assert sorted(fx.__all__) == fx.__all__
    assert set(fx.__all__) - {"__version__"} == public
    assert fx.__all__ == [
        "ExtractorConfig", "FeatureExtractor", "FeatureXError", "ImageFeaturizer", "ImageVectorizer",
        "__version__", "cache_info", "image_features", "list_images", "near_duplicates",
        "nearest_neighbors", "pair_recall", "similar_pairs",
    ]  # fmt: skip


def test_version_is_the_package_version() -> None:
    assert version("featurex") == fx.__version__


def test_cache_info_has_the_documented_keys() -> None:
    info = fx.cache_info()
    assert {"loads", "hits", "size"} <= set(info)
    assert all(isinstance(v, int) for v in info.values())


def test_config_is_small_and_picklable() -> None:
    config = fx.ExtractorConfig(model="resnet18", weights=None)
    payload = pickle.dumps(config)
    assert len(payload) < 1000
    restored = pickle.loads(payload)
    assert restored == config and restored.key == config.key
