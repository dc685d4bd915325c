"""The Pillow decoder, on the CPU: a checked image -> RGB pixels, EXIF orientation applied,
first frame only, any mode converted (grayscale, palette, RGBA, CMYK, 16-bit)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .header import DecodeError, open_image, pillow_errors

log = logging.getLogger(__name__)

# 16-bit and 32-bit integer grayscale: Pillow's convert("RGB") clips these at 255 instead of
# scaling, which would turn most 16-bit images white.
_WIDE_GRAY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


@dataclass(frozen=True)
class PixelRecord:
    """Decoded 8-bit pixels, row-major, as in Spark's image data source.

    Spark stores 3 and 4 channel images as BGR and BGRA (OpenCV's order), 1 channel as gray.
    """

    height: int
    width: int
    n_channels: int
    data: bytes
    origin: str | None = None


def decode_image(data: object, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Image bytes -> RGB image. Raises DecodeError with the reason.

    The pixel limit is checked on the header, before any pixels are allocated. With
    `draft_size`, a JPEG is decoded at the smallest DCT scale whose sides are both at least
    that size (much faster for big photos).
    """
    return decode_opened(open_image(data, max_pixels), max_pixels, draft_size)


def decode_opened(
    image: Image.Image, max_pixels: int, draft_size: int | None = None
) -> Image.Image:
    """An image `open_image` checked -> its RGB pixels."""
    with pillow_errors(max_pixels):
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()  # frame 0 of an animation; raises on truncated data
        return _to_rgb(_apply_exif(image))


def from_pixels(record: PixelRecord, max_pixels: int) -> Image.Image:
    """Spark image-struct pixels -> RGB image (BGR(A) reordered, alpha dropped as for bytes)."""
    h, w, c = record.height, record.width, record.n_channels
    if h * w > max_pixels:
        raise DecodeError(
            f"image too large: {w}x{h} = {h * w} pixels, over max_pixels={max_pixels}"
        )
    if c not in (1, 3, 4) or h <= 0 or w <= 0 or len(record.data) != h * w * c:
        raise DecodeError(
            f"invalid image struct: {w}x{h}x{c} does not match {len(record.data)} bytes of data"
        )
    pixels = np.frombuffer(record.data, np.uint8).reshape(h, w, c)
    if c == 1:
        return Image.fromarray(pixels[:, :, 0], "L").convert("RGB")
    return Image.fromarray(np.ascontiguousarray(pixels[:, :, 2::-1]), "RGB")


def _apply_exif(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # a corrupt EXIF block must not cost the image
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_GRAY:
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(wide / 257.0, 0, 255).round().astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")
