"""Preprocessing as data: each family's transform read into one description, from which the
Pillow path and the tensor (GPU) path are both made, checked against the transform itself."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from images import encode, photo
from models_for_tests import tiny_cnn
from PIL import Image
from torchvision import transforms as T

import featurex as fx
from featurex.decode.preprocess import Preprocessing, agrees_with, crop_image, describe, normalize

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def test_torchvision_presets_are_read_and_give_their_exact_numbers() -> None:
    import torchvision

    for weights in (
        torchvision.models.ResNet50_Weights.IMAGENET1K_V2,  # resize 232
        torchvision.models.EfficientNet_B3_Weights.IMAGENET1K_V1,  # bicubic, 320 -> 300
    ):
        preset = weights.transforms()
        pre = describe(preset)
        assert pre is not None and pre.resize == preset.resize_size[0]
        for size in ((333, 251), (251, 333), (97, 513)):
            image = photo(*size, seed=size[0])
            got = normalize(crop_image(image, pre)[None], pre)[0]
            assert torch.equal(got, preset(image)), (weights, size)  # bit for bit


def test_timm_open_clip_and_hf_transforms_are_read() -> None:
    import families
    import open_clip
    import timm

    model = timm.create_model(families.TIMM_ARCH, num_classes=0)
    timm_eval = timm.data.create_transform(
        **timm.data.resolve_data_config({}, model=model), is_training=False
    )
    _, _, clip_eval = open_clip.create_model_and_transforms(families.OPEN_CLIP_ARCH)
    for transform in (timm_eval, clip_eval):
        pre = describe(transform)
        assert pre is not None and pre.interpolation == "bicubic" and pre.resampler == "pil"
        assert agrees_with(pre, transform) is None


@pytest.mark.parametrize("kind", ["clip", "dinov2", "siglip", "vit"])
def test_hf_image_processors_are_read(kind: str, tmp_path: Path) -> None:
    import families
    from transformers import AutoImageProcessor, SiglipImageProcessor, ViTImageProcessor

    from featurex.models.hf import ProcessorTransform

    save = {
        "clip": families.save_tiny_clip,
        "dinov2": families.save_tiny_dinov2,
        "siglip": lambda f: SiglipImageProcessor().save_pretrained(f),  # 224 x 224, no crop
        "vit": lambda f: ViTImageProcessor().save_pretrained(f),  # bilinear
    }
    save[kind](tmp_path)
    transform = ProcessorTransform(AutoImageProcessor.from_pretrained(tmp_path))
    pre = transform.preprocessing
    assert pre is not None and pre.resampler == "tensor" and pre.crop_rounding == "floor"
    assert agrees_with(pre, transform) is None
    if kind in ("siglip", "vit"):
        assert pre.resize == (224, 224) and pre.crop is None


def test_a_crop_larger_than_the_image_is_padded_as_torchvision_pads_it() -> None:
    compose = T.Compose(
        [T.Resize(20), T.CenterCrop((32, 27)), T.ToTensor(), T.Normalize(MEAN, STD)]
    )
    pre = describe(compose)
    assert pre == Preprocessing(resize=20, crop=(32, 27), mean=pre.mean, std=pre.std)  # type: ignore[union-attr]
    assert pre is not None and agrees_with(pre, compose) is None
    tensor = Preprocessing(
        resize=None, crop=(6, 5), mean=(0, 0, 0), std=(1, 1, 1), resampler="tensor"
    )
    image = Image.fromarray(np.full((3, 2, 3), 200, np.uint8))
    assert (
        agrees_with(tensor, lambda i: T.functional.to_tensor(T.functional.center_crop(i, [6, 5])))
        is None
    )
    assert crop_image(image, tensor).shape == (3, 6, 5)


@pytest.mark.parametrize(
    "transform",
    [
        T.Compose([T.Resize(64), T.ColorJitter(0.1), T.ToTensor()]),  # a step it does not know
        T.Compose([T.CenterCrop(64), T.Resize(32), T.ToTensor()]),  # crop before resize
        T.Compose([T.Resize(64, max_size=80), T.ToTensor()]),
        T.Compose([T.Resize(64), T.CenterCrop(64)]),  # no tensor at the end
        lambda image: T.functional.to_tensor(image),
    ],
)
def test_what_it_cannot_read_is_left_to_the_transform(transform: object) -> None:
    assert describe(transform) is None


class _Misleading:
    """A transform whose description says something else than what it does."""

    preprocessing = Preprocessing(resize=32, crop=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return T.functional.to_tensor(image.resize((32, 32)))


def test_a_description_that_disagrees_with_its_transform_is_not_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from featurex.models import warn_once

    warn_once.cache_clear()
    engine = fx.FeatureExtractor(tiny_cnn, weights=None, device="cpu", transform=_Misleading())
    with caplog.at_level(logging.WARNING):
        loaded = engine.loaded
    assert loaded.preprocessing is None
    assert any("differs from it" in r.message for r in caplog.records)
    features, errors = engine.extract([encode(photo(40, 30), "PNG")])
    assert errors == [None] and np.isfinite(features).all()


def test_the_engine_reads_each_models_preprocessing_at_load() -> None:
    pre = fx.FeatureExtractor("resnet18", weights=None, device="cpu").loaded.preprocessing
    assert pre is not None and (pre.resize, pre.crop, pre.interpolation) == (
        256,
        (224, 224),
        "bilinear",
    )
    assert np.allclose(pre.mean, MEAN) and np.allclose(pre.std, STD)
