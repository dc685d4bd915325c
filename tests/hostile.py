"""A corpus of hostile and odd inputs, generated in memory with real codecs.

Each case is (name, data, expected, reason): `data` is bytes or None, `expected` is "ok"
(a usable image: finite features) or "error" (null features and a reason matching the
regex `reason`). The expected values, where a decoder could go either way:

- A JPEG missing only its EOI marker: "error". All its pixels are in the file (forcing the
  decode with LOAD_TRUNCATED_IMAGES gives the intact image bit for bit), but a streaming
  decoder that has not seen EOI cannot know that the scan is complete: cut one byte
  earlier, the same file is missing its last 9 rows and looks no different. Pillow and
  torchvision.io both report it as truncated; featurizing it would also accept files cut
  short, so it is refused.
- A JPEG whose entropy-coded data is replaced by random bytes: "ok". The container is a
  well-formed JPEG, and libjpeg decodes the scan to noise, reporting bad Huffman codes and
  stray markers as warnings, which Pillow does not surface. Nothing tells featurex the
  pixels are wrong, so it gives features (of noise). The same holds for a scan cut short
  and closed with an EOI marker (libjpeg fills the rest with gray): a known limit.
- Bytes after a complete image (common in uploads): "ok".
- A truncated image (header only, mid-scan, half a PNG or GIF): "error", pixels are missing.
"""

from __future__ import annotations

import struct
import zlib
from functools import lru_cache
from typing import Literal, NamedTuple

import numpy as np
from images import encode, jpeg, photo, with_orientation
from PIL import Image

BOMB_SIDE = 20_000  # claims 20,000 x 20,000 = 400 Mpx in about 400 KB
# featurex's default pixel limit (featurex.config.DEFAULT_MAX_PIXELS), restated so that this
# module stays importable without featurex (tests compare the two).
DEFAULT_LIMIT = 89_478_485


class Case(NamedTuple):
    name: str
    data: bytes | None
    expected: Literal["ok", "error"]
    reason: str = ""  # for errors: a regex the reason must match


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@lru_cache(maxsize=1)
def bomb(side: int = BOMB_SIDE) -> bytes:
    """A real, complete 8-bit grayscale PNG of side x side zeros: a few hundred KB that
    decode to side**2 bytes (and 4x that as RGB)."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte 0, then the row
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return _png(side, side, 8, 0, idat)


@lru_cache(maxsize=1)
def many_scans(side: int = 4000, extra: int = 3000) -> bytes:
    """A valid progressive JPEG (flat gray, side x side) whose last scan, with its Huffman
    table, is repeated `extra` times: libjpeg decodes every repeat over the whole image
    (libjpeg-turbo's LJT-01-003). 4000 and 3000: 250 KB that took 34 s to decode."""
    data = encode(Image.new("L", (side, side), 120), "JPEG", progressive=True, quality=90)
    eoi = len(data) - 2
    last = data.rfind(b"\xff\xc4", 0, data.rindex(b"\xff\xda"))  # DHT, SOS, scan data
    return data[:eoi] + data[last:eoi] * extra + data[eoi:]


def _rgb16_png(width: int, height: int) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): a ramp over the full range."""
    ramp = np.linspace(0, 65535, width * height * 3).astype(">u2").reshape(height, width * 3)
    raw = b"".join(b"\x00" + r.tobytes() for r in ramp)
    return _png(width, height, 16, 2, zlib.compress(raw))


def _gray16_png() -> bytes:
    ramp = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
    return encode(Image.fromarray(ramp), "PNG")


def _png_of(width: int, height: int, mode: str = "L") -> bytes:
    """A flat image of any size, cheap to encode: PNG compresses it to almost nothing."""
    return encode(Image.new(mode, (width, height), 90), "PNG")


def _scan_bounds(data: bytes) -> tuple[int, int]:
    """Start of the first scan's entropy-coded data and of the EOI marker of a baseline JPEG."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    return start, len(data) - 2


def _scrambled_jpeg(keep_ff: bool) -> bytes:
    good = jpeg(160, 120, seed=5)
    start, end = _scan_bounds(good)
    noise = np.random.default_rng(1).integers(0, 256, end - start, dtype=np.uint8)
    if not keep_ff:
        noise[noise == 0xFF] = 0xFE
    return good[:start] + noise.tobytes() + good[end:]


def claims_size(width: int, height: int) -> bytes:
    """A small baseline JPEG whose frame header claims width x height."""
    data = jpeg(160, 120, seed=3)
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def _zero_width_png() -> bytes:
    return _png(0, 10, 8, 0, zlib.compress(b"\x00" * 10))


def _bad_crc_png() -> bytes:
    good = bytearray(encode(photo(40, 30), "PNG"))
    good[29] ^= 0xFF  # the IHDR chunk's CRC
    return bytes(good)


def _animated_gif() -> bytes:
    frames = [photo(48, 32, seed=s).convert("P") for s in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)


def _animated_webp() -> bytes:
    frames = [photo(48, 32, seed=s) for s in range(3)]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=40)


def _palette_with_transparency() -> bytes:
    image = photo(50, 40).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(image, "PNG", transparency=0)


def _multipage_tiff() -> bytes:
    pages = [photo(40, 30, seed=s) for s in range(2)]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:], compression="tiff_lzw")


def _corrupt_exif() -> bytes:
    good = with_orientation(photo(64, 48), 6)
    start = good.index(b"Exif\x00\x00") + 6
    length = int.from_bytes(good[start - 8 : start - 6], "big") - 8
    return good[:start] + b"\xff" * length + good[start + length :]


def _exif_orientation(orientation: int) -> bytes:
    return with_orientation(photo(64, 48, seed=orientation), orientation)


def limit_cases(max_pixels: int) -> list[Case]:
    """The largest image allowed under `max_pixels`, and one row more."""
    width = 10_000
    height = max_pixels // width
    assert height > 0, "max_pixels too small for the limit cases"
    over = width * (height + 1)
    return [
        Case(f"huge but legal ({width}x{height}, at the limit)", _png_of(width, height), "ok"),
        Case(
            f"one row over the limit ({width}x{height + 1})",
            _png_of(width, height + 1),
            "error",
            rf"image too large: {width}x{height + 1} = {over} pixels, over max_pixels={max_pixels}",
        ),
    ]


@lru_cache(maxsize=2)
def corpus(max_pixels: int = DEFAULT_LIMIT) -> tuple[Case, ...]:
    """Every kind, in a fixed order. `max_pixels` is the limit the consumer will use."""
    good = jpeg(160, 120, seed=3)
    scan_start, eoi = _scan_bounds(good)
    png = encode(photo(80, 60, seed=4), "PNG")
    text = b"Hello! This is a text file that someone named cat.jpg.\n" * 20
    random = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    not_an_image = "not an image|cannot identify"
    truncated = r"^OSError: image file is truncated"

    def too_large(pixels: int) -> str:  # Pillow's bomb check or ours, whichever fires first
        return rf"^image too large: ({pixels} pixels|\d+x\d+ = {pixels} pixels), over max_pixels={max_pixels}$"

    cases = [
        # Not images at all.
        Case("null", None, "error", "^null input$"),
        Case("empty bytes", b"", "error", r"^empty input \(0 bytes\)$"),
        Case("random bytes", random, "error", not_an_image),
        Case("text", text, "error", not_an_image),
        Case(
            "pdf header",
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< >>\nendobj\n",
            "error",
            not_an_image,
        ),
        Case(
            "html", b"<!DOCTYPE html><html><body><img src=x></body></html>", "error", not_an_image
        ),
        Case("png signature only", b"\x89PNG\r\n\x1a\n", "error", not_an_image),
        Case("jpeg soi only", b"\xff\xd8", "error", not_an_image),
        # Damaged images.
        Case("jpeg headers only (cut at the scan)", good[:scan_start], "error", truncated),
        Case("jpeg cut mid-scan", good[: (scan_start + eoi) // 2], "error", truncated),
        Case("jpeg cut 16 bytes into the scan", good[: scan_start + 16], "error", truncated),
        Case("jpeg missing only its EOI", good[:eoi], "error", truncated),
        Case("jpeg missing its EOI and one byte", good[: eoi - 1], "error", truncated),
        Case("jpeg with trailing garbage", good + b"\x00garbage" * 64, "ok"),
        Case("jpeg scrambled scan without markers", _scrambled_jpeg(keep_ff=False), "ok"),
        Case("jpeg scrambled scan with 0xFF bytes", _scrambled_jpeg(keep_ff=True), "ok"),
        Case("png cut in half", png[: len(png) // 2], "error", truncated),
        Case("png with a bad header CRC", _bad_crc_png(), "error", not_an_image),
        Case("png with zero width", _zero_width_png(), "error", not_an_image),
        Case("progressive jpeg with 3006 scans", many_scans(), "error", "^too many JPEG scans"),
        Case("gif cut in half", _animated_gif()[:300], "error", truncated),
        # Sizes.
        Case(
            "decompression bomb png (20000x20000 zeros)", bomb(), "error", too_large(BOMB_SIDE**2)
        ),
        Case(
            "jpeg header claiming 65500x65500",
            claims_size(65_500, 65_500),
            "error",
            too_large(65_500**2),
        ),
        Case("1x1 jpeg", jpeg(1, 1), "ok"),
        Case("1x1 png", _png_of(1, 1, "RGB"), "ok"),
        Case("10000x10 png", _png_of(10_000, 10, "RGB"), "ok"),
        Case("10x10000 png", _png_of(10, 10_000, "RGB"), "ok"),
        *limit_cases(max_pixels),
        # Modes and formats.
        Case("cmyk jpeg", encode(photo(64, 48).convert("CMYK"), "JPEG"), "ok"),
        Case("grayscale jpeg", encode(photo(64, 48).convert("L"), "JPEG"), "ok"),
        Case("progressive jpeg", encode(photo(64, 48), "JPEG", progressive=True), "ok"),
        Case("16-bit grayscale png", _gray16_png(), "ok"),
        Case("16-bit rgb png", _rgb16_png(48, 32), "ok"),
        Case("rgba png", encode(photo(64, 48).convert("RGBA"), "PNG"), "ok"),
        Case("1-bit png", encode(photo(64, 48).convert("1"), "PNG"), "ok"),
        Case("palette png with transparency", _palette_with_transparency(), "ok"),
        Case("animated gif", _animated_gif(), "ok"),
        Case("multipage lzw tiff", _multipage_tiff(), "ok"),
        Case("bmp", encode(photo(64, 48), "BMP"), "ok"),
        Case("webp", encode(photo(64, 48), "WEBP"), "ok"),
        Case("animated webp", _animated_webp(), "ok"),
        *(Case(f"exif orientation {o}", _exif_orientation(o), "ok") for o in range(1, 9)),
        Case("corrupt exif block", _corrupt_exif(), "ok"),
    ]
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return tuple(cases)
