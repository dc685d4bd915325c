"""The checks both decoders share, made on the header before any pixel is decoded.

`open_image` reads an image's header with Pillow (lazily: no pixels) and refuses what must
not be decoded: not bytes, empty, not a raster format featurex accepts, more pixels than
`max_pixels`, a JPEG with more scans than any encoder writes. `check_resize` refuses an
image the first resize would blow up. `gpu_jpeg` says whether a checked JPEG can go to
nvJPEG with the verdict Pillow would give (`jpeg.nvjpeg_frame`: libjpeg's rules, on the
markers), and with which EXIF orientation; anything else stays with Pillow. nvJPEG's pixels are
close to Pillow's, not equal: it upsamples 4:2:0 chroma by replication where libjpeg-turbo
interpolates ("fancy upsampling"). Every refusal is a `DecodeError` whose message is the reason
users see.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator
from typing import NamedTuple

from PIL import Image

from ..errors import first_line
from .jpeg import nvjpeg_frame

log = logging.getLogger(__name__)

# Progressive JPEG scans: libjpeg writes 10 (mozjpeg a few more). Each scan is a pass over
# the whole image, and a crafted file can repeat a tiny one thousands of times (libjpeg-turbo's
# LJT-01-003): 250 KB with 3,000 scans of a 16 Mpx image took 34 s to decode.
MAX_JPEG_SCANS = 100
_ALWAYS_RESIZABLE_ASPECT = 16
# Raster formats only. Pillow also opens EPS (by running Ghostscript on the file, where it is
# installed) and a long tail of rare formats: none belongs on a path fed untrusted files.
# (Camera MPO files open through the JPEG plugin.)
IMAGE_FORMATS = (
    "AVIF", "BMP", "DIB", "GIF", "ICO", "JPEG", "JPEG2000", "PNG", "PPM", "TGA", "TIFF", "WEBP",
)  # fmt: skip
_EXIF_ORIENTATION = 0x0112
_SOS = b"\xff\xda"


class DecodeError(ValueError):
    """An input that is not a decodable image; its message is the reason given to users."""


Bytes = bytes | bytearray | memoryview


class Encoded(NamedTuple):
    """A checked JPEG for the GPU decoder: its bytes, the EXIF orientation to apply, and its
    decoded size in pixels (what it costs in GPU memory, per channel)."""

    data: Bytes
    orientation: int
    pixels: int


def open_image(data: object, max_pixels: int) -> Image.Image:
    """The image's header, checked; its pixels are not decoded yet. Raises DecodeError."""
    if data is None:
        raise DecodeError("null input")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected image bytes or a path, got {type(data).__name__}")
    if len(data) == 0:
        raise DecodeError("empty input (0 bytes)")
    _allow_pixels(max_pixels)
    with pillow_errors(max_pixels):
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise DecodeError(
                f"image too large: {width}x{height} = {width * height} pixels, "
                f"over max_pixels={max_pixels}"
            )
        if image.format in ("JPEG", "MPO"):
            _check_scans(data)
    return image


@contextlib.contextmanager
def pillow_errors(max_pixels: int) -> Iterator[None]:
    """Pillow's many exception types on bad data -> one DecodeError with a short reason."""
    try:
        yield
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow refuses over twice its own limit before we see the size: name our limit.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels" if found else first_line(exc)
        raise DecodeError(f"image too large: {size}, over max_pixels={max_pixels}") from exc
    except Exception as exc:  # OSError, SyntaxError, ValueError... on corrupt data
        raise DecodeError(reason(exc)) from exc


def orientation(image: Image.Image) -> int:
    """The EXIF orientation Pillow's `exif_transpose` applies (1: none); 1 where unreadable."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a corrupt EXIF block must not cost the image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) once EXIF orientation is applied (5 to 8 swap the sides)."""
    width, height = image.size
    return (height, width) if orientation(image) >= 5 else (width, height)


def check_resize(size: tuple[int, int], target: int, max_pixels: int) -> None:
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


def gpu_jpeg(image: Image.Image, data: Bytes) -> Encoded | None:
    """For a checked image: the JPEG as the GPU decoder takes it (with the EXIF orientation
    to apply after nvJPEG decodes it), or None where it must stay with Pillow to keep
    Pillow's verdict.

    nvJPEG takes 8-bit YCbCr and grayscale JPEGs (not CMYK: it raises), decodes truncated
    and corrupt files without a word where Pillow refuses them, and applies no EXIF
    orientation. So: the plain JPEG modes only, files whose whole marker structure libjpeg
    accepts (`jpeg.nvjpeg_frame`; progressive files too stay with Pillow, in the decode
    threads, not in nvJPEG's hybrid decoder on the calling thread), and an orientation Pillow
    would apply cleanly. A file nvJPEG still refuses comes back to Pillow, whose verdict is
    final.
    """
    if image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return None
    frame = nvjpeg_frame(data)
    if isinstance(frame, str):
        log.debug("JPEG stays with Pillow: %s", frame)
        return None
    turn = orientation(image)
    if turn != 1:
        try:  # exif_transpose rewrites the EXIF block; where that fails Pillow does not turn
            image.getexif().tobytes()
        except Exception:
            return None
    return Encoded(data, turn, frame.width * frame.height)


def _check_scans(data: Bytes) -> None:
    """Refuse a JPEG with more scans than any encoder writes, before decoding it."""
    # Entropy-coded data never holds 0xFF 0xDA (0xFF is stuffed there), so this counts the
    # SOS markers, plus any in embedded thumbnails: a bound, not an exact count.
    scans = (data if isinstance(data, bytes | bytearray) else bytes(data)).count(_SOS)
    if scans > MAX_JPEG_SCANS:
        raise DecodeError(
            f"too many JPEG scans: {scans}, over {MAX_JPEG_SCANS} (each one decodes the whole "
            f"image again: a crafted file can take minutes)"
        )


def reason(exc: BaseException) -> str:
    """A decoder's exception as the short reason users see."""
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
