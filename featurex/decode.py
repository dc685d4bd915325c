"""Bytes -> RGB PIL image -> tensor, with the error policy. No Spark here.

Every failure is turned into a short reason string by `prepare`; whether that reason becomes
a null or a failed task is the caller's choice (`on_error`).
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageOps

from .config import Transform
from .errors import first_line

log = logging.getLogger(__name__)

# 16-bit and 32-bit integer grayscale: Pillow's convert("RGB") clips these at 255 instead of
# scaling, which would turn most 16-bit images white.
_WIDE_GRAY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


class DecodeError(ValueError):
    """An input that is not a decodable image; its message is the reason given to users."""


def decode_image(data: object, max_pixels: int) -> Image.Image:
    """Decode image bytes into an RGB image, EXIF orientation applied, first frame only.

    The pixel limit is checked on the header, before any pixels are allocated.
    """
    if data is None:
        raise DecodeError("null input")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise DecodeError("empty input (0 bytes)")
    _allow_pixels(max_pixels)
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise DecodeError(
                f"image too large: {width}x{height} = {width * height} pixels, "
                f"over max_pixels={max_pixels}"
            )
        image.load()  # frame 0 of an animation; raises on truncated data
        return _to_rgb(_apply_exif(image))
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"image too large: {exc}") from exc
    except Exception as exc:  # Pillow raises many types on corrupt data (OSError, SyntaxError...)
        raise DecodeError(_reason(exc)) from exc


def prepare(
    data: object, transform: Transform, max_pixels: int
) -> tuple[object | None, str | None]:
    """Decode and preprocess one input: (tensor, None) on success, (None, reason) otherwise."""
    try:
        image = decode_image(data, max_pixels)
    except DecodeError as exc:
        return None, str(exc)
    try:
        return transform(image), None
    except Exception as exc:
        return None, f"preprocessing failed: {_reason(exc)}"


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


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "UnidentifiedImageError":
        return "not an image: cannot identify the format"
    message = first_line(exc)
    return name if message == name else f"{name}: {message}"[:300]


def _allow_pixels(max_pixels: int) -> None:
    # Pillow refuses images over 2x its global limit before we can look at them. Our own
    # check is the one that counts, so raise Pillow's limit (never lower it) to ours.
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
