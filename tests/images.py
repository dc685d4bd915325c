"""Test images, generated in memory: realistic enough to exercise real codecs."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A smooth colour gradient with shapes and noise, like a (dull) photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-1, 1, (3, 2))
    channels = [base[c] + slope[c, 0] * x * 255 / width + slope[c, 1] * y * 255 / height
                for c in range(3)]  # fmt: skip
    pixels = np.stack(channels, axis=-1)
    for _ in range(4):  # a few bright discs
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(10, 60)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r**2
        pixels[mask] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 8, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    return encode(photo(width, height, seed), "JPEG", quality=90)


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    """A JPEG whose EXIF orientation tag is set (pixels stored as given)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())
