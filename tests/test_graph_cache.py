"""The optimized graph's disk cache: a hit gives the same features without the family's
library, and a stale or corrupt entry is built again, never trusted."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from images import jpeg, photo
from PIL import Image

from featurex import FeatureExtractor
from featurex.config import ExtractorConfig
from featurex.models import graph_cache, runtime


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEATUREX_CACHE_DIR", str(tmp_path))
    return tmp_path


def _config(**options: object) -> ExtractorConfig:
    return ExtractorConfig.from_options("resnet18", None, {"batch_size": 2, **options})


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


def _features(loaded: runtime.LoadedModel) -> np.ndarray:
    batch = torch.stack([loaded.transform(i) for i in images_for_check()])
    return runtime.forward(
        loaded.module, batch.contiguous(memory_format=torch.channels_last), None
    ).numpy()


def images_for_check() -> list[Image.Image]:
    return [photo(300 + 40 * i, 200, seed=i) for i in range(2)]


def test_a_second_load_comes_from_the_cache_with_the_same_features(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config()
    built = runtime.load_model(config)
    assert built.graph_batch == 2
    (name,) = _entries(cache)
    assert name == graph_cache.entry_name(config, None)
    with caplog.at_level(logging.INFO, logger="featurex"):
        hit = runtime.load_model(config)
    assert "from its cache" in caplog.text
    assert isinstance(hit.transform, graph_cache.Described)
    assert (hit.dim, hit.graph_batch, hit.preprocessing) == (512, 2, built.preprocessing)
    np.testing.assert_array_equal(_features(hit), _features(built))
    # The engine on a hit: the same rows as a fresh build's, image by image.
    images = [jpeg(320, 240, seed=s) for s in range(3)]
    out, errors = FeatureExtractor.from_config(config).extract(images)
    assert errors == [None] * 3
    assert np.isfinite(out).all()


def test_what_changes_the_graph_changes_the_entry(cache: Path) -> None:
    names = {
        graph_cache.entry_name(_config(), None),
        graph_cache.entry_name(_config(batch_size=4), None),
        graph_cache.entry_name(_config(seed=1), None),
        graph_cache.entry_name(_config(precision="bf16"), torch.bfloat16),
        graph_cache.entry_name(_config(precision="int8"), None),
    }
    assert len(names) == 5 and None not in names
    # Not cached: a factory, whose code the key holds but not the files it may read.
    from models_for_tests import tiny_cnn

    factory = ExtractorConfig.from_options(tiny_cnn, None, {})
    assert graph_cache.entry_name(factory, None) is None


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # the test's own jit calls
def test_int8_is_cached_as_its_traced_quantized_model(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(precision="int8")
    with caplog.at_level(logging.INFO, logger="featurex"):
        built = runtime.load_model(config)
    assert "quantized the model to int8" in caplog.text
    assert len(_entries(cache)) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="featurex"):
        hit = runtime.load_model(config)
    assert "from its cache" in caplog.text and "quantized" not in caplog.text  # no calibration
    assert hit.graph_batch is None and hit.dim == built.dim == 512
    np.testing.assert_array_equal(_features(hit), _features(built))
    # A graph that loads but cannot run is a failed check: quantized again, and replaced.
    (name,) = _entries(cache)
    torch.jit.save(torch.jit.script(_Fails()), str(cache / name / "graph.pt"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="featurex"):
        again = runtime.load_model(config)
    assert "does not run" in caplog.text and "quantized the model to int8" in caplog.text
    np.testing.assert_array_equal(_features(again), _features(built))


class _Fails(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("not this graph")


@pytest.mark.parametrize("damage", ["truncated graph", "other check", "unreadable meta"])
def test_a_corrupt_or_stale_entry_is_built_again_and_replaced(
    cache: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config()
    want = _features(runtime.load_model(config))
    (name,) = _entries(cache)
    folder = cache / name
    if damage == "truncated graph":
        data = (folder / "graph.pt").read_bytes()
        (folder / "graph.pt").write_bytes(data[: len(data) // 2])
    elif damage == "other check":  # as a graph that no longer computes what was stored would
        check = torch.load(folder / "check.pt", weights_only=True)
        check["want"] = check["want"] * 1.01
        torch.save(check, folder / "check.pt")
    else:
        (folder / "meta.json").write_text("{")
    with caplog.at_level(logging.INFO, logger="featurex"):
        again = runtime.load_model(config)
    assert "from its cache" not in caplog.text
    assert "rebuilding" in caplog.text
    assert not isinstance(again.transform, graph_cache.Described)
    np.testing.assert_array_equal(_features(again), want)
    assert _entries(cache) == [name]  # written again, and good: the next load is a hit
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="featurex"):
        runtime.load_model(config)
    assert "from its cache" in caplog.text


def test_an_empty_cache_dir_turns_it_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEATUREX_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert graph_cache.entry_name(_config(), None) is None
    runtime.load_model(_config())
    assert list(tmp_path.iterdir()) == []


def test_a_hit_in_a_new_process_needs_no_torchvision(cache: Path) -> None:
    """The worker's path: the config arrives pickled, the graph from the cache; torchvision's
    1.8 s import (torch._dynamo) is not paid. The driver's checks read torchvision's catalog
    from the cache as well."""
    from featurex.models.torchvision import catalog

    config = _config()
    want = _features(runtime.load_model(config))
    np.save(cache / "want.npy", want)
    # The catalog as the driver's first check leaves it (written here: this process's is
    # made already, in the session's cache folder).
    (cache / f"torchvision-{_tv_version()}-models.json").write_text(json.dumps(catalog()))
    script = f"""
import pickle, sys
import numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
from featurex.config import ExtractorConfig
from featurex.models import runtime
config = ExtractorConfig.from_options("resnet18", None, {{"batch_size": 2}})
config = pickle.loads(pickle.dumps(config))
loaded = runtime.load_model(config)
from test_graph_cache import _features
np.testing.assert_array_equal(_features(loaded), np.load({str(cache / "want.npy")!r}))
print(sorted(m for m in sys.modules if m.split(".")[0] == "torchvision" or m == "torch._dynamo"))
"""
    env = {**os.environ, "FEATUREX_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _tv_version() -> str:
    from importlib import metadata

    return metadata.version("torchvision")
