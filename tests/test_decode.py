"""Decoding: every common mode becomes RGB, EXIF is applied, bad bytes give a reason."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hostile import bomb, many_scans
from images import encode, jpeg, photo, with_orientation
from PIL import Image

from featurex.config import DEFAULT_MAX_PIXELS
from featurex.decode import (
    DecodeError,
    Decoding,
    PixelRecord,
    describe,
    load_image,
    prepare,
    resize_target,
)
from featurex.models.base import default_transform


def decode(data: object, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    return load_image(data, max_pixels)


def _gray16() -> bytes:
    ramp = (np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 32).astype(np.uint16)
    return encode(Image.fromarray(ramp), "PNG")  # Pillow infers mode I;16


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def _palette_with_transparency() -> bytes:
    image = photo(50, 40).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(image, "PNG", transparency=0)


@pytest.mark.parametrize(
    ("name", "data", "size"),
    [
        ("rgb jpeg", jpeg(64, 48), (64, 48)),
        ("grayscale", encode(photo(64, 48).convert("L"), "PNG"), (64, 48)),
        ("1-bit", encode(photo(64, 48).convert("1"), "PNG"), (64, 48)),
        ("palette", encode(photo(64, 48).convert("P"), "PNG"), (64, 48)),
        ("palette with transparency", _palette_with_transparency(), (50, 40)),
        ("rgba", encode(photo(64, 48).convert("RGBA"), "PNG"), (64, 48)),
        ("la", encode(photo(64, 48).convert("LA"), "PNG"), (64, 48)),
        ("cmyk jpeg", encode(photo(64, 48).convert("CMYK"), "JPEG"), (64, 48)),
        ("16-bit grayscale png", _gray16(), (64, 32)),
        ("animated gif", _animated_gif(), (40, 30)),
        ("tiff", encode(photo(64, 48), "TIFF"), (64, 48)),
        ("bmp", encode(photo(64, 48), "BMP"), (64, 48)),
        ("webp", encode(photo(64, 48), "WEBP"), (64, 48)),
        ("bytearray", bytearray(jpeg(64, 48)), (64, 48)),
    ],
)
def test_valid_images_become_rgb(name: str, data: bytes, size: tuple[int, int]) -> None:
    image = decode(data)
    assert image.mode == "RGB"
    assert image.size == size


def test_16_bit_is_scaled_not_clipped() -> None:
    pixels = np.asarray(decode(_gray16()))
    # The ramp spans 0..65504: scaled, it spans 0..255; clipped, it would be mostly 255.
    assert pixels.min() == 0 and pixels.max() >= 254
    assert 100 < pixels.mean() < 155


def test_animated_image_uses_the_first_frame() -> None:
    assert decode(_animated_gif()).getpixel((5, 5)) == (255, 0, 0)


# EXIF orientation n stores the pixels so that this transform shows them upright.
_STORED = {
    1: lambda im: im,
    2: lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    3: lambda im: im.transpose(Image.Transpose.ROTATE_180),
    4: lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    5: lambda im: im.transpose(Image.Transpose.TRANSPOSE),
    6: lambda im: im.transpose(Image.Transpose.ROTATE_90),
    7: lambda im: im.transpose(Image.Transpose.TRANSVERSE),
    8: lambda im: im.transpose(Image.Transpose.ROTATE_270),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    # Four coloured quadrants make any wrong rotation or flip visible.
    upright = Image.new("RGB", (80, 40))
    for (x, y), colour in {(0, 0): (255, 0, 0), (40, 0): (0, 255, 0),
                           (0, 20): (0, 0, 255), (40, 20): (255, 255, 0)}.items():  # fmt: skip
        upright.paste(colour, (x, y, x + 40, y + 20))
    stored = _STORED[orientation](upright)
    decoded = decode(with_orientation(stored, orientation))
    assert decoded.size == (80, 40)
    for point in [(10, 5), (70, 5), (10, 35), (70, 35)]:
        got, want = decoded.getpixel(point), upright.getpixel(point)
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 40, (point, got, want)


def test_corrupt_exif_keeps_the_image() -> None:
    good = with_orientation(photo(64, 48), 6)
    start = good.index(b"Exif\x00\x00") + 6  # the TIFF header, then the tag directory
    length = int.from_bytes(good[start - 8 : start - 6], "big") - 8  # rest of the segment
    corrupt = good[:start] + b"\xff" * length + good[start + length :]
    image = decode(corrupt)
    assert image.mode == "RGB" and image.size in {(64, 48), (48, 64)}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "null input"),
        (b"", "empty input"),
        (b"hello, I am text, not an image", "not an image"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "not an image"),
        (b"\x89PNG\r\n\x1a\n", "SyntaxError|OSError|not an image"),
        (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not an image"),
        (jpeg(200, 150)[:600], "truncated|OSError"),
        (12345, "expected image bytes or a path, got int"),
        ("/no/such/image.jpg", "cannot read '/no/such/image.jpg': No such file or directory"),
    ],
)
def test_bad_input_gives_a_reason(data: object, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(data)


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = jpeg(300, 200)
    assert decode(data, max_pixels=60_000).size == (300, 200)
    with pytest.raises(
        DecodeError, match=r"image too large: 300x200 = 60000 pixels, over max_pixels=59999"
    ):
        decode(data, max_pixels=59_999)


def test_paths_and_file_uris_are_read(tmp_path: Path) -> None:
    data = jpeg(120, 80, seed=3)
    target = tmp_path / "a b%.jpg"
    target.write_bytes(data)
    expected = np.asarray(decode(data))
    for item in (str(target), target, target.as_uri(), f"file:{target}"):
        assert np.array_equal(np.asarray(decode(item)), expected), item
    with pytest.raises(DecodeError, match=r"cannot read 'nope://x/y.jpg': "):
        decode("nope://x/y.jpg")


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_pixel_records_are_bgr_like_spark(channels: int) -> None:
    rgb = np.asarray(photo(40, 30, seed=2))
    if channels == 1:
        pixels, expected = rgb[:, :, :1], np.repeat(rgb[:, :, :1], 3, axis=2)
    else:
        pixels = rgb[:, :, ::-1]  # BGR, as Spark stores it
        if channels == 4:
            pixels = np.concatenate([pixels, np.full((30, 40, 1), 7, np.uint8)], axis=2)
        expected = rgb
    record = PixelRecord(30, 40, channels, np.ascontiguousarray(pixels).tobytes(), "file:/x.png")
    assert np.array_equal(np.asarray(decode(record)), expected)
    with pytest.raises(DecodeError, match=r"invalid image struct: 40x30x3 does not match 10 bytes"):
        decode(PixelRecord(30, 40, 3, b"0123456789"))
    with pytest.raises(DecodeError, match=r"image too large: 40x30 = 1200 pixels"):
        decode(record, max_pixels=1000)


def test_draft_decoding_shrinks_big_jpegs_but_never_below_the_resize_size() -> None:
    big = encode(photo(2400, 1600, seed=1), "JPEG", quality=90)
    full = load_image(big, DEFAULT_MAX_PIXELS)
    drafted = load_image(big, DEFAULT_MAX_PIXELS, draft_size=256)
    assert full.size == (2400, 1600)
    assert drafted.size == (600, 400)  # 1/4: the largest DCT scale that keeps 400 >= 256
    assert min(drafted.size) >= 256
    png = encode(photo(600, 400), "PNG")  # only JPEG has DCT scaling
    assert load_image(png, DEFAULT_MAX_PIXELS, draft_size=256).size == (600, 400)
    # The same picture: the downscaled full decode and the draft agree closely.
    small = np.asarray(full.resize(drafted.size, Image.Resampling.BILINEAR), np.float32)
    assert np.abs(small - np.asarray(drafted, np.float32)).mean() < 4.0


def _prepare(data: bytes, transform: object, max_pixels: int) -> tuple[object, str | None]:
    """The host side as the engine runs it: the transform as data where it reads as such."""
    return prepare(data, Decoding(transform, describe(transform), max_pixels))  # type: ignore[arg-type]


def test_a_strip_that_resizing_would_blow_up_is_refused_fast() -> None:
    # 144 bytes and 20,000 pixels, far under the limit; resizing its short side to 256 made
    # it 5,120,000x256 pixels: 13 s and 6 GB of RSS for one row before this check.
    strip = encode(Image.new("RGB", (20_000, 1), (10, 200, 30)), "PNG")
    start = time.perf_counter()
    tensor, reason = _prepare(strip, default_transform(), DEFAULT_MAX_PIXELS)
    assert time.perf_counter() - start < 1.0
    assert tensor is None
    assert reason == (
        "image too elongated: 20000x1 resizes to 5120000x256 = 1310720000 pixels, "
        "over max_pixels=89478485"
    )


@pytest.mark.parametrize(
    ("size", "ok"),
    [((1000, 10), True), ((10, 1000), True), ((10_000, 10), False), ((10, 10_000), False)],
)
def test_the_resize_check_follows_a_compose_and_max_pixels(size: tuple[int, int], ok: bool) -> None:
    from torchvision import transforms as T

    compose = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
    assert resize_target(compose) == 32
    tensor, reason = _prepare(encode(Image.new("RGB", size), "PNG"), compose, 1_000_000)
    if ok:  # 3200x32: used
        assert reason is None and tensor is not None and tuple(tensor.shape) == (3, 32, 32)
    else:  # 32000x32 = 1,024,000 pixels
        assert tensor is None and reason is not None
        assert "resizes to" in reason and "= 1024000 pixels, over max_pixels=1000000" in reason


def test_a_bomb_refused_by_pillow_names_max_pixels() -> None:
    # Over twice Pillow's own limit, Pillow refuses the image in open(), naming its limit
    # (178956970), which is not the one the user set.
    with pytest.raises(DecodeError) as caught:
        decode(bomb(), max_pixels=4_000_000)
    assert str(caught.value) == "image too large: 400000000 pixels, over max_pixels=4000000"


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding() -> None:
    # 250 KB, 16 Mpx and 3,006 scans: 34 s of decoding before this check.
    start = time.perf_counter()
    with pytest.raises(DecodeError) as caught:
        decode(many_scans())
    assert time.perf_counter() - start < 1.0
    assert str(caught.value).startswith("too many JPEG scans: 3006, over 100 ")
    progressive = encode(photo(64, 48), "JPEG", progressive=True)
    assert decode(progressive).size == (64, 48)  # 10 scans: fine


def test_a_small_pixel_limit_does_not_refuse_images_that_the_resize_enlarges() -> None:
    # 200x250 = 50,000 pixels, at the limit; Resize(256) makes it 256x320 = 81,920 pixels.
    tensor, reason = _prepare(jpeg(200, 250), default_transform(), 50_000)
    assert reason is None and tensor is not None
    # Up to 16:1 the resize is always allowed (256x4096 here); beyond, max_pixels holds.
    limit = 170_000

    def reason_for(width: int, height: int) -> str | None:
        strip = encode(Image.new("RGB", (width, height)), "PNG")
        return _prepare(strip, default_transform(), limit)[1]

    assert reason_for(1600, 100) is None
    assert reason_for(1700, 100) == (
        "image too elongated: 1700x100 resizes to 4352x256 = 1114112 pixels, over max_pixels=170000"
    )


def test_only_raster_formats_are_opened() -> None:
    import io

    # Pillow would hand this to Ghostscript where it is installed; featurex never opens it.
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"
    assert Image.open(io.BytesIO(eps)).format == "EPS"
    with pytest.raises(DecodeError, match="not an image: cannot identify the format"):
        decode(eps)
    for fmt in ("PPM", "TGA", "ICO", "AVIF"):
        assert decode(encode(photo(20, 10), fmt)).size == (20, 10), fmt


def test_resize_target_reads_presets_and_composes() -> None:
    from torchvision import transforms as T

    from featurex.models.base import default_transform

    assert resize_target(default_transform()) == 256
    assert resize_target(T.Compose([T.Resize(300), T.CenterCrop(224)])) == 300
    assert resize_target(T.Compose([T.CenterCrop(224)])) is None
    assert resize_target(lambda image: image) is None
