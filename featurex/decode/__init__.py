"""Input -> the model's preprocessed input, with one error policy. No Spark here.

An input is encoded image bytes, a path or URI to read them from, or decoded pixels
(`PixelRecord`, Spark's image struct). Its stages, each in a module of its own:

    read      path -> bytes, many reads in flight                       (read.py)
    check     bytes -> header: format, size vs max_pixels, scans,
              elongation, EXIF orientation                              (header.py)
    decode    cpu: Pillow -> RGB                                        (pillow.py)
              gpu: JPEG bytes -> nvJPEG in batches, on the model's GPU  (gpu.py)
    preprocess  resize, crop (per image), then normalize (per batch), made from the model's
              preprocessing as data, the same on both paths             (preprocess.py)

`prepare` runs the host side for one input (in the engine's decode threads): read, check,
and either the Pillow path to a preprocessed tensor, or, for a JPEG the GPU decoder takes,
the checked bytes (`Encoded`). Every failure is a short reason string; whether it becomes a
null or a failed task is the caller's choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from PIL import Image

from .._types import Transform
from .header import (
    IMAGE_FORMATS,
    MAX_JPEG_SCANS,
    DecodeError,
    Encoded,
    check_resize,
    gpu_jpeg,
    open_image,
    oriented_size,
    reason,
)
from .pillow import PixelRecord, decode_image, decode_opened, from_pixels
from .preprocess import Preprocessing, crop_image, describe, normalize
from .read import read_path

__all__ = [
    "IMAGE_FORMATS",
    "MAX_JPEG_SCANS",
    "DecodeError",
    "Decoding",
    "Encoded",
    "PixelRecord",
    "Preprocessing",
    "decode_image",
    "describe",
    "load_image",
    "normalize",
    "prepare",
    "read_path",
    "resize_target",
]


@dataclass(frozen=True)
class Decoding:
    """How one model's inputs are decoded: its preprocessing and the limits."""

    transform: Transform  # PIL image -> float CHW tensor: the model's own
    preprocessing: Preprocessing | None  # the same as data; None: run `transform` per image
    max_pixels: int
    fast_decode: bool = False  # JPEG draft decoding (the Pillow path only)
    gpu: bool = False  # leave the JPEGs nvJPEG takes to the GPU decoder

    @property
    def resize_size(self) -> int | None:
        """The short side the first resize makes, when known: it bounds the resize's output
        (the elongation check) and, with `fast_decode`, the JPEG draft scale."""
        if self.preprocessing is not None:
            return self.preprocessing.resize_target
        return resize_target(self.transform)


def prepare(item: object, how: Decoding) -> tuple[torch.Tensor | Encoded | None, str | None]:
    """The host side for one input: (a preprocessed CHW tensor or an `Encoded` JPEG, None)
    on success, (None, reason) otherwise.

    With `how.preprocessing` the tensor is the uint8 crop (`normalize` makes the batch);
    without, the float tensor of the model's own transform.
    """
    try:
        if isinstance(item, str | os.PathLike):
            item = read_path(os.fspath(item))
        target = how.resize_size
        if isinstance(item, PixelRecord):
            image = from_pixels(item, how.max_pixels)
            if target is not None:
                check_resize(image.size, target, how.max_pixels)
        else:
            header = open_image(item, how.max_pixels)
            if target is not None:
                check_resize(oriented_size(header), target, how.max_pixels)
            if how.gpu:
                assert isinstance(item, bytes | bytearray | memoryview)  # open_image checked
                encoded = gpu_jpeg(header, item)
                if encoded is not None:
                    return encoded, None
            image = decode_opened(header, how.max_pixels, target if how.fast_decode else None)
    except DecodeError as exc:
        return None, str(exc)
    return preprocess(image, how)


def preprocess(image: Image.Image, how: Decoding) -> tuple[torch.Tensor | None, str | None]:
    """A decoded RGB image -> the model's preprocessed tensor, or (None, reason)."""
    try:
        if how.preprocessing is not None:
            return crop_image(image, how.preprocessing), None
        return how.transform(image), None
    except Exception as exc:
        return None, f"preprocessing failed: {reason(exc)}"


def load_image(item: object, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Any supported input -> RGB image. Raises DecodeError with the reason."""
    if isinstance(item, PixelRecord):
        return from_pixels(item, max_pixels)
    if isinstance(item, str | os.PathLike):
        item = read_path(os.fspath(item))
    return decode_image(item, max_pixels, draft_size)


def resize_target(transform: object) -> int | None:
    """The short side a transform first resizes images to, when it says so."""
    described = describe(transform)
    if described is not None:
        return described.resize_target
    steps = getattr(transform, "transforms", None)  # T.Compose
    first = steps[0] if isinstance(steps, list) and steps else transform
    size = getattr(first, "resize_size", None)  # torchvision's presets, hf's processors
    if size is None and type(first).__name__ == "Resize" and getattr(first, "max_size", 1) is None:
        size = getattr(first, "size", None)
    if isinstance(size, list | tuple) and len(size) == 1:
        size = size[0]
    return size if isinstance(size, int) and size > 0 else None
