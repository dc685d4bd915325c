"""Property-based fuzzing of the Spark-free engine (hypothesis): random bytes and mutated real
images never raise out of `FeatureExtractor.extract`; every row gets finite features xor a
reason; a good image among them keeps its features."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from images import encode, jpeg, photo
from models_for_tests import tiny_engine
from PIL import Image

import featurex as fx

# Pillow warns about much of what it reads here; the properties are what is checked.
pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning"
)
# A fixed profile: the same examples on every run, no flaky deadline on a shared machine,
# nothing saved between runs. 600 examples take 4-6 s on 2 cores with light load (3-4x
# that when the machine is busy); the last test takes fewer.
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=600,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("featurex-fuzz", FUZZ)
RAN: Counter[str] = Counter()  # examples run per test, for the report


def _animated(fmt: str) -> bytes:
    frames = [photo(40, 30, seed=s) for s in range(2)]
    if fmt == "GIF":
        frames = [f.convert("P") for f in frames]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=40)


# Small real images, so that mutations often land in headers and tables.
SEEDS: dict[str, bytes] = {
    "jpeg": jpeg(48, 32, seed=1),
    "progressive jpeg": encode(photo(48, 32, seed=2), "JPEG", progressive=True),
    "cmyk jpeg": encode(photo(40, 30, seed=3).convert("CMYK"), "JPEG"),
    "png": encode(photo(40, 30, seed=4), "PNG"),
    "palette png": encode(photo(40, 30, seed=5).convert("P"), "PNG", transparency=0),
    "16-bit png": encode(
        Image.fromarray(np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50), "PNG"
    ),
    "gif": _animated("GIF"),
    "webp": _animated("WEBP"),
    "tiff": encode(photo(40, 30, seed=6), "TIFF", compression="tiff_lzw"),
    "bmp": encode(photo(20, 15, seed=7), "BMP"),
}
MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
          b"II*\x00", b"MM\x00*", b"BM", b"P6\n", b"\x00\x00\x01\x00"]  # fmt: skip
GOOD = jpeg(64, 48, seed=9)
# Odd values for header fields: zero, one, largest, sign bits.
FIELDS = [
    b"\x00\x00",
    b"\x00\x01",
    b"\xff\xff",
    b"\x80\x00",
    b"\x7f\xff\xff\xff",
    b"\x00\x00\x00\x00",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real image after 1-4 mutations: bit flips, truncation, splices with another format,
    overwritten or inserted bytes, odd values in the first 64 bytes (sizes, offsets)."""
    data = bytearray(draw(st.sampled_from(list(SEEDS.values()))))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "truncate", "splice", "overwrite", "insert", "field"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            other = draw(st.sampled_from(list(SEEDS.values())))
            data = data[:at] + other[draw(st.integers(0, len(other) - 1)) :]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(chunk)] = chunk
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            field = draw(st.sampled_from(FIELDS))
            at = min(at, 63)
            data[at : at + len(field)] = field
    return bytes(data)


RANDOM = st.one_of(
    st.none(),
    st.binary(max_size=4096),
    st.builds(lambda magic, rest: magic + rest, st.sampled_from(MAGICS), st.binary(max_size=2048)),
)


@pytest.fixture(scope="module")
def engine() -> tuple[fx.FeatureExtractor, np.ndarray]:
    """The engine, and the features of GOOD alone (what it must get among hostile rows)."""
    extractor = fx.FeatureExtractor(**tiny_engine(batch_size=3, decode_threads=2))
    features, errors = extractor.extract([GOOD])
    assert errors == [None]
    return extractor, features[0]


def _check(extractor: fx.FeatureExtractor, good: np.ndarray, inputs: list[object], at: int) -> None:
    items = [*inputs[:at], GOOD, *inputs[at:]]
    features, errors = extractor.extract(items)  # must not raise, whatever the bytes
    assert features.shape == (len(items), extractor.dim) and features.dtype == np.float32
    assert len(errors) == len(items)
    for row, error in zip(features, errors, strict=True):
        if error is None:
            assert np.isfinite(row).all()
        else:
            assert isinstance(error, str) and error and np.isnan(row).all()
    # Hostile neighbours in the same batches do not disturb a good row.
    assert errors[at] is None
    np.testing.assert_allclose(features[at], good, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nfuzz examples run: {dict(RAN)}")


@FUZZ
@given(inputs=st.lists(RANDOM, max_size=5), at=st.integers(0, 5))
def test_random_bytes_never_raise(
    engine: tuple[fx.FeatureExtractor, np.ndarray], inputs: list[bytes | None], at: int
) -> None:
    RAN["random bytes"] += 1
    _check(*engine, inputs, min(at, len(inputs)))


@FUZZ
@given(inputs=st.lists(mutated(), min_size=1, max_size=5), at=st.integers(0, 5))
def test_mutated_images_never_raise(
    engine: tuple[fx.FeatureExtractor, np.ndarray], inputs: list[bytes], at: int
) -> None:
    RAN["mutated images"] += 1
    _check(*engine, inputs, min(at, len(inputs)))


@st.composite
def any_size(draw: st.DrawFn) -> tuple[int, int, bytes]:
    """A valid image of any shape up to 200,000 pixels: 1x1, 20,000x1, 1x20,000 and between."""
    width = draw(st.integers(1, 20_000))
    height = draw(st.integers(1, max(1, 200_000 // width)))
    if draw(st.booleans()):
        width, height = height, width
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF"]))
    mode = "L" if fmt == "GIF" else draw(st.sampled_from(["L", "RGB"]))
    image = Image.new(mode, (width, height), draw(st.integers(0, 255)))
    return width, height, encode(image, fmt)


@settings(FUZZ, max_examples=200)
@given(image=any_size())
def test_any_shape_gives_features_or_the_predicted_size_reason(
    image: tuple[int, int, bytes],
) -> None:
    RAN["any shape"] += 1
    width, height, data = image
    limit = 2_000_000
    extractor = fx.FeatureExtractor(**tiny_engine(max_pixels=limit))
    features, (error,) = extractor.extract([data])
    # The transform resizes the short side to 36: a thin strip grows by 36/short.
    short, long = sorted((width, height))
    if 36 * int(36 * long / short) > limit:
        assert error is not None and error.startswith("image too elongated"), (width, height, error)
    else:
        assert error is None and np.isfinite(features).all(), (width, height, error)
