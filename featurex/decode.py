"""Input -> RGB PIL image -> tensor, with the error policy. No Spark here.

An input is encoded image bytes, a path or URI to read them from, or decoded pixels
(`PixelRecord`, Spark's image struct). Every failure is turned into a short reason string by
`prepare`; whether that reason becomes a null or a failed task is the caller's choice.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image, ImageOps

from ._types import Transform
from .errors import first_line

log = logging.getLogger(__name__)

# Progressive JPEG scans: libjpeg writes 10 (mozjpeg a few more). Each scan is a pass over
# the whole image, and a crafted file can repeat a tiny one thousands of times (libjpeg-turbo's
# LJT-01-003): 250 KB with 3,000 scans of a 16 Mpx image took 34 s to decode.
MAX_JPEG_SCANS = 100
_ALWAYS_RESIZABLE_ASPECT = 16
# 16-bit and 32-bit integer grayscale: Pillow's convert("RGB") clips these at 255 instead of
# scaling, which would turn most 16-bit images white.
_WIDE_GRAY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


# Raster formats only. Pillow also opens EPS (by running Ghostscript on the file, where it is
# installed) and a long tail of rare formats: none belongs on a path fed untrusted files.
# (Camera MPO files open through the JPEG plugin.)
IMAGE_FORMATS = (
    "AVIF", "BMP", "DIB", "GIF", "ICO", "JPEG", "JPEG2000", "PNG", "PPM", "TGA", "TIFF", "WEBP",
)  # fmt: skip


class DecodeError(ValueError):
    """An input that is not a decodable image; its message is the reason given to users."""


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


def load_image(item: object, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Any supported input -> RGB image. Raises DecodeError with the reason."""
    if isinstance(item, PixelRecord):
        return from_pixels(item, max_pixels)
    if isinstance(item, str | os.PathLike):
        item = read_path(os.fspath(item))
    return decode_image(item, max_pixels, draft_size)


def decode_image(data: object, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Decode image bytes into an RGB image, EXIF orientation applied, first frame only.

    The pixel limit is checked on the header, before any pixels are allocated. With
    `draft_size`, a JPEG is decoded at the smallest DCT scale whose sides are both at least
    that size (much faster for big photos).
    """
    if data is None:
        raise DecodeError("null input")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected image bytes or a path, got {type(data).__name__}")
    if len(data) == 0:
        raise DecodeError("empty input (0 bytes)")
    _allow_pixels(max_pixels)
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise DecodeError(
                f"image too large: {width}x{height} = {width * height} pixels, "
                f"over max_pixels={max_pixels}"
            )
        if image.format in ("JPEG", "MPO"):
            _check_scans(data)
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()  # frame 0 of an animation; raises on truncated data
        return _to_rgb(_apply_exif(image))
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow refuses over twice its own limit before we see the size: name our limit.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels" if found else first_line(exc)
        raise DecodeError(f"image too large: {size}, over max_pixels={max_pixels}") from exc
    except Exception as exc:  # Pillow raises many types on corrupt data (OSError, SyntaxError...)
        raise DecodeError(_reason(exc)) from exc


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


def read_path(path: str) -> bytes:
    """The bytes of a local path, a file: URI, or any URI pyarrow's filesystems serve
    (hdfs://, s3://, gs:// where installed and configured)."""
    parts = urlsplit(path)
    try:
        if parts.scheme in ("", "file") or len(parts.scheme) == 1:  # 1 letter: a Windows drive
            local = parts.path if parts.scheme == "file" else path
            if parts.scheme == "file" and not os.path.exists(local):
                local = unquote(local)  # Spark and Hadoop may percent-encode URIs
            with open(local, "rb") as f:
                return f.read()
        filesystem, inner = _filesystem(path)
        with filesystem.open_input_stream(inner) as stream:
            return bytes(stream.read())
    except Exception as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else _reason(exc)
        raise DecodeError(f"cannot read {path!r}: {why}") from exc


_FILESYSTEMS: dict[str, Any] = {}
_FS_LOCK = threading.Lock()


def _filesystem(uri: str) -> tuple[Any, str]:
    """pyarrow's filesystem for a URI, one per scheme and host per process."""
    from pyarrow import fs

    parts = urlsplit(uri)
    root = f"{parts.scheme}://{parts.netloc}"
    with _FS_LOCK:
        if root not in _FILESYSTEMS:
            _FILESYSTEMS[root] = fs.FileSystem.from_uri(uri)[0]
    inner = parts.netloc + parts.path if parts.scheme in ("s3", "gs", "gcs") else parts.path
    return _FILESYSTEMS[root], inner


def prepare(
    item: object,
    transform: Transform,
    max_pixels: int,
    resize_size: int | None = None,
    fast_decode: bool = False,
) -> tuple[object | None, str | None]:
    """Load and preprocess one input: (tensor, None) on success, (None, reason) otherwise.

    `resize_size` is the short side the transform first resizes to (`resize_target`), when
    known: it bounds the resize's output and, with `fast_decode`, the JPEG draft scale.
    """
    try:
        image = load_image(item, max_pixels, resize_size if fast_decode else None)
        if resize_size is not None:
            _check_resize(image.size, resize_size, max_pixels)
    except DecodeError as exc:
        return None, str(exc)
    try:
        return transform(image), None
    except Exception as exc:
        return None, f"preprocessing failed: {_reason(exc)}"


def _check_scans(data: bytes | bytearray | memoryview) -> None:
    """Refuse a JPEG with more scans than any encoder writes, before decoding it."""
    # Entropy-coded data never holds 0xFF 0xDA (0xFF is stuffed there), so this counts the
    # SOS markers, plus any in embedded thumbnails: a bound, not an exact count.
    scans = (data if isinstance(data, bytes | bytearray) else bytes(data)).count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise DecodeError(
            f"too many JPEG scans: {scans}, over {MAX_JPEG_SCANS} (each one decodes the whole "
            f"image again: a crafted file can take minutes)"
        )


def _check_resize(size: tuple[int, int], target: int, max_pixels: int) -> None:
    """Refuse an image that the transform's first resize would blow up past max_pixels.

    Resizing the short side to 256 turns a legal 20,000x1 strip (a 144-byte PNG) into
    5,120,000x256 pixels: 13 s and 6 GB for one row. Checked for the resizes whose output
    is known from the image size: torchvision's presets and a Compose starting with
    Resize(int); a custom transform bounds its own output.
    """
    width, height = size
    short, long = min(width, height), max(width, height)
    new_long = int(target * long / short)  # as torchvision computes it
    # The resize enlarges small images: whatever max_pixels, allow what any image up to
    # 16:1 needs (1 Mpx at 256), so that a small limit never refuses ordinary images.
    if target * new_long > max(max_pixels, _ALWAYS_RESIZABLE_ASPECT * target * target):
        new_w, new_h = (target, new_long) if width <= height else (new_long, target)
        raise DecodeError(
            f"image too elongated: {width}x{height} resizes to {new_w}x{new_h} = "
            f"{new_w * new_h} pixels, over max_pixels={max_pixels}"
        )


def resize_target(transform: object) -> int | None:
    """The short side a transform first resizes images to, when it says so."""
    steps = getattr(transform, "transforms", None)  # T.Compose
    first = steps[0] if isinstance(steps, list) and steps else transform
    size = getattr(first, "resize_size", None)  # torchvision's classification presets
    if size is None and type(first).__name__ == "Resize" and getattr(first, "max_size", 1) is None:
        size = getattr(first, "size", None)
    if isinstance(size, list | tuple) and len(size) == 1:
        size = size[0]
    return size if isinstance(size, int) and size > 0 else None


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
