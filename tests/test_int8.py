"""precision="int8" on the CPU: quantized, calibrated the same way in every worker, checked
against fp32, with a fallback. Correctness only; speed is in benchmarks/."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from images import encode, jpeg, photo
from models_for_tests import assert_close

import featurex as fx
from featurex.errors import ConfigError
from featurex.models import quantize

pytestmark = pytest.mark.skipif(quantize.engine() is None, reason="no x86 quantized engine")
IMAGES = [
    jpeg(220, 160, 1),
    jpeg(150, 240, 2),
    encode(photo(180, 180, 3), "PNG"),
    jpeg(300, 200, 4),
]
R18 = {"model": "resnet18", "weights": None, "device": "cpu"}


def _quantized(module: torch.nn.Module) -> set[str]:
    """The int8 ops a model runs: the quantized:: ops of the traced, frozen graph that
    featurex runs and caches, or torch.ao.nn.quantized's layer types where it runs the
    quantized model as it is (static: conv2d...; dynamic: linear_dynamic)."""
    if isinstance(module, torch.jit.ScriptModule):
        return {n.kind() for n in module.graph.nodes() if n.kind().startswith("quantized::")}
    return {type(m).__module__ for m in module.modules() if ".quantized" in type(m).__module__}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))


def test_a_cnn_is_statically_quantized_and_stays_close_to_fp32() -> None:
    int8 = fx.FeatureExtractor(**R18, precision="int8")
    module = int8.loaded.module
    assert isinstance(module, torch.jit.ScriptModule)  # traced and frozen: what is cached
    kinds = _quantized(module)
    assert "quantized::conv2d" in kinds and not any("dynamic" in k for k in kinds)  # static
    assert int8.loaded.autocast_dtype is None and int8.loaded.graph_batch is None
    fp32 = fx.FeatureExtractor(**R18).extract(IMAGES)[0]
    features, errors = int8.extract([*IMAGES, b"junk"])
    assert errors[:4] == [None] * 4 and errors[4] is not None and np.isnan(features[4]).all()
    assert features.dtype == np.float32 and _cosine(features[:4], fp32).min() > 0.99


def test_a_transformer_gets_dynamic_int8_linear_layers(tmp_path: Path) -> None:
    from families import save_tiny_clip

    model = {"model": f"hf:{save_tiny_clip(tmp_path / 'clip')}", "device": "cpu"}
    clip = fx.FeatureExtractor(**model, precision="int8")
    kinds = _quantized(clip.loaded.module)
    assert kinds == {"quantized::linear_dynamic"}  # the patch embedding stays fp32
    fp32 = fx.FeatureExtractor(**model).extract(IMAGES)[0]
    assert _cosine(clip.extract(IMAGES)[0], fp32).min() > 0.99


class _Untraceable(torch.nn.Module):
    """Python control flow on a tensor's value: torch.fx cannot trace it, so static
    quantization fails, and featurex falls back to fp32."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.sum() > 0:
            y = y * 2
        return y.mean(dim=(2, 3))


def test_a_model_that_cannot_be_quantized_warns_once_and_runs_fp32(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from featurex.models.runtime import warn_once

    warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="featurex.models"):
        int8 = fx.FeatureExtractor(model=_Untraceable, weights=None, device="cpu", precision="int8")
        module = int8.loaded.module
    assert isinstance(module, _Untraceable)  # the fp32 model, built again
    assert caplog.text.count("cannot quantize the model to int8") == 1
    assert "running fp32" in caplog.text
    fp32 = fx.FeatureExtractor(model=_Untraceable, weights=None, device="cpu")
    assert_close(int8.extract(IMAGES)[0], fp32.extract(IMAGES)[0], rtol=1e-6)


def test_calibration_is_validated_on_the_driver_and_keys_the_model(tmp_path: Path) -> None:
    cases = [
        ({"calibration": str(tmp_path / "missing")}, r"calibration folder .*missing' does not exist"),
        ({"calibration": str(tmp_path)}, r"holds no images: pass a folder of representative images"),
        ({"calibration": str(tmp_path), "precision": "fp32"}, r"is used only with precision='int8', got precision='fp32'"),
        ({"device": "cuda"}, r"precision='int8' runs on the CPU .* not on device='cuda'"),
    ]  # fmt: skip
    for kwargs, message in cases:
        options = {"precision": "int8", **kwargs}
        with pytest.raises(ConfigError, match=message):
            fx.image_features("content", model="resnet18", weights=None, **options)
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(jpeg(120, 100, 10 + i))
    own = fx.ExtractorConfig(**R18, precision="int8", calibration=str(tmp_path))
    builtin = fx.ExtractorConfig(**R18, precision="int8")
    assert own.key != builtin.key
    assert own.key == fx.ExtractorConfig(**R18, precision="int8", calibration=str(tmp_path)).key
    (tmp_path / "3.jpg").write_bytes(jpeg(120, 100, 13))  # another image: another calibration
    assert own.key != fx.ExtractorConfig(**R18, precision="int8", calibration=str(tmp_path)).key
    # Calibrated on other images, the model differs, slightly.
    mine = fx.FeatureExtractor.from_config(own).extract(IMAGES)[0]
    shipped = fx.FeatureExtractor.from_config(builtin).extract(IMAGES)[0]
    assert not np.array_equal(mine, shipped) and _cosine(mine, shipped).min() > 0.99


def test_int8_through_spark_every_input_type_with_errors_and_identical_across_partitions(
    spark: Any, tmp_path: Path
) -> None:
    from pyspark.sql import functions as F

    folder = tmp_path / "images"
    folder.mkdir()
    for i, data in enumerate(IMAGES):
        (folder / f"{i}.png" if i == 2 else folder / f"{i}.jpg").write_bytes(data)
    (folder / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    files = spark.read.format("binaryFile").load(str(folder))
    # The same images twice, in different partitions: every partition's worker calibrates
    # and quantizes on its own, and must come to the same model.
    doubled = files.union(files).repartition(4)
    col = fx.image_features("content", **R18, precision="int8", with_errors=True)
    rows = doubled.select("path", col.alias("r")).collect()
    by_path: dict[str, list[Any]] = {}
    for row in rows:
        by_path.setdefault(row.path, []).append(row.r)
    assert len(by_path) == 5 and all(len(v) == 2 for v in by_path.values())
    for path, (one, two) in by_path.items():
        if path.endswith("bad.jpg"):
            assert one.features is None and two.features is None and one.error
        else:
            assert one.error is None and one.features == two.features
    # By file name: binaryFile says file:/..., the image source file:///...
    want = {
        p.rsplit("/", 1)[1]: np.array(v[0].features, np.float32)
        for p, v in by_path.items()
        if v[0].features
    }

    paths = files.select(F.col("path").alias("p"))
    images = spark.read.format("image").load(str(folder)).select("image")
    other = fx.image_features("p", **R18, precision="int8")
    struct = fx.image_features("image", **R18, precision="int8")
    for path, got in paths.select("p", other.alias("f")).collect():
        if got is not None:
            name = path.rsplit("/", 1)[1]
            assert_close(np.array([got], np.float32), want[name][None], rtol=1e-6)
    structs = images.select(F.col("image.origin").alias("p"), struct.alias("f")).collect()
    assert len([r for r in structs if r.f is not None]) == 4
    for row in structs:
        if row.f is not None:  # Spark's own JPEG decoder may differ slightly from Pillow
            assert _cosine(np.array([row.f]), want[row.p.rsplit("/", 1)[1]][None]).min() > 0.99


def test_image_featurizer_and_the_cli_accept_int8() -> None:
    featurizer = fx.ImageFeaturizer(model="resnet18", weights="none", precision="int8")
    assert featurizer.extractor_config().precision == "int8"
    from featurex.cli import build_parser

    args = build_parser().parse_args(["extract", "in", "--output", "out", "--precision", "int8"])
    assert args.precision == "int8"


def test_fast_decode_defaults_on_for_int8_only() -> None:
    # Its deviation (cosine 0.99997) is below int8's own (0.995), above bf16's (0.99999).
    assert fx.ExtractorConfig(**R18, precision="int8").fast_decode is True
    assert fx.ExtractorConfig(**R18, precision="int8", fast_decode=False).fast_decode is False
    for precision in ("fp32", "bf16"):
        assert fx.ExtractorConfig(**R18, precision=precision).fast_decode is False
