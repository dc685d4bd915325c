"""The GPU decoder's logic, on the CPU: torchvision's `decode_jpeg` decodes the same batches
there (libjpeg-turbo instead of nvJPEG), so routing, retries, the header checks, EXIF and the
verdict per file run through the same code as on a GPU (`FeatureExtractor._decoder_device`).
What only CUDA has (nvJPEG, pinned buffers, streams, memory) is in tests/test_gpu.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import hostile
import numpy as np
import pytest
import torch
from images import encode, jpeg, photo, with_orientation
from models_for_tests import tiny_cnn
from PIL import Image

import featurex as fx
from featurex.decode import gpu as gpu_decode

CPU = torch.device("cpu")


def engines(**options: object) -> tuple[fx.FeatureExtractor, fx.FeatureExtractor]:
    """The same model twice: the Pillow path, and the GPU path run on the CPU."""
    options = {"model": "resnet18", "weights": None, "device": "cpu", "batch_size": 4, **options}
    pillow = fx.FeatureExtractor(**options, decode="cpu")  # type: ignore[arg-type]
    tensors = fx.FeatureExtractor(**options)  # type: ignore[arg-type]
    tensors._decoder_device = CPU
    return pillow, tensors


def decoded_on_gpu(
    engine: fx.FeatureExtractor, inputs: list[object]
) -> tuple[np.ndarray, list[str | None], int]:
    before = gpu_decode.STATS["decoded"]
    features, errors = engine.extract(inputs)
    return features, errors, gpu_decode.STATS["decoded"] - before


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def bogus_huffman_table() -> bytes:
    """A JPEG whose header Pillow reads but whose Huffman table libjpeg refuses."""
    good = bytearray(jpeg(64, 48, seed=1))
    table = good.index(b"\xff\xc4")
    good[table + 5 : table + 21] = b"\xff" * 16  # code counts summing past 256
    return bytes(good)


@pytest.fixture(scope="module")
def pair() -> tuple[fx.FeatureExtractor, fx.FeatureExtractor]:
    return engines()


def test_jpegs_go_to_the_gpu_decoder_and_every_other_file_to_pillow(
    pair: tuple[fx.FeatureExtractor, fx.FeatureExtractor],
) -> None:
    pillow, gpu = pair
    inputs: list[object] = [
        jpeg(200, 150, seed=1),  # baseline
        encode(photo(180, 200, seed=2), "JPEG", progressive=True),
        encode(photo(160, 120, seed=3).convert("L"), "JPEG"),  # grayscale
        encode(photo(120, 90, seed=4), "PNG"),
        encode(photo(64, 48, seed=5).convert("CMYK"), "JPEG"),  # nvJPEG raises on CMYK
        jpeg(160, 120, seed=6)[:-2],  # no EOI: nvJPEG would decode it, Pillow refuses it
        encode(photo(100, 80, seed=7), "WEBP"),
        None,
    ]
    want, want_errors = pillow.extract(inputs)
    got, errors, on_gpu = decoded_on_gpu(gpu, inputs)
    assert on_gpu == 3  # the baseline, progressive and grayscale JPEGs
    assert errors == want_errors
    assert errors[5] is not None and errors[5].startswith("OSError: image file is truncated")
    ok = [i for i, e in enumerate(errors) if e is None]
    assert ok == [0, 1, 2, 3, 4, 6]
    assert cosines(got[ok], want[ok]).min() > 0.9999


def test_a_batch_that_fails_is_retried_image_by_image(
    pair: tuple[fx.FeatureExtractor, fx.FeatureExtractor], caplog: pytest.LogCaptureFixture
) -> None:
    pillow, gpu = pair
    bad = bogus_huffman_table()
    inputs: list[object] = [jpeg(100 + 10 * i, 90, seed=i) for i in range(4)]
    inputs.insert(2, bad)
    with caplog.at_level(logging.DEBUG, logger="featurex.decode.gpu"):
        got, errors, on_gpu = decoded_on_gpu(gpu, inputs)
    assert any("one by one" in r.message for r in caplog.records)
    assert on_gpu == 4  # the bad file cost only itself
    want, want_errors = pillow.extract(inputs)
    assert (
        errors == want_errors and errors[2] == "OSError: broken data stream when reading image file"
    )
    ok = [0, 1, 3, 4]
    assert cosines(got[ok], want[ok]).min() > 0.9999


def test_the_header_checks_run_before_the_gpu_decoder() -> None:
    pillow, gpu = engines(max_pixels=30_000)
    inputs: list[object] = [
        jpeg(200, 150),  # 30,000 pixels: at the limit
        jpeg(201, 150),  # over it
        encode(Image.new("RGB", (3000, 8)), "JPEG"),  # resizes to 96,000 x 256
    ]
    _, errors, on_gpu = decoded_on_gpu(gpu, inputs)
    assert on_gpu == 1
    assert errors == pillow.extract(inputs)[1]
    assert errors[1] == "image too large: 201x150 = 30150 pixels, over max_pixels=30000"
    assert errors[2] is not None and errors[2].startswith("image too elongated: 3000x8")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_on_the_gpu_path(orientation: int) -> None:
    from featurex.decode import Decoding, Encoded, prepare
    from featurex.decode.preprocess import Preprocessing

    # No resize and no crop: the decoded pixels themselves, turned.
    pre = Preprocessing(resize=None, crop=None, mean=(0, 0, 0), std=(1, 1, 1))
    data = with_orientation(photo(48, 32, seed=orientation), orientation)
    how = Decoding(transform=lambda image: image, preprocessing=pre, max_pixels=10**6)
    want, _ = prepare(data, how)
    encoded, _ = prepare(data, Decoding(how.transform, pre, 10**6, gpu=True))
    assert isinstance(encoded, Encoded) and encoded.orientation == orientation
    decoder = gpu_decode.GpuDecoder(CPU, pre, lambda d: (None, "not used"))
    ((got, reason),) = decoder.decode([(encoded.data, encoded.orientation)])
    assert reason is None and isinstance(want, torch.Tensor) and got is not None
    assert got.shape == want.shape  # 32x48 for orientations 5 to 8
    # libjpeg-turbo in Pillow and in torchvision: the same pixels.
    assert (got.int() - want.int()).abs().max() <= 1


def test_the_hostile_corpus_gets_the_same_verdict_on_both_paths(
    pair: tuple[fx.FeatureExtractor, fx.FeatureExtractor],
) -> None:
    pillow, gpu = pair
    cases = hostile.corpus()
    inputs = [c.data for c in cases]
    want, want_errors = pillow.extract(inputs)
    got, errors, on_gpu = decoded_on_gpu(gpu, inputs)
    assert on_gpu >= 10  # the plain JPEGs of the corpus went to the GPU decoder
    for case, error, expected in zip(cases, errors, want_errors, strict=True):
        assert error == expected, case.name
    scans = [c.name for c in cases].index("progressive jpeg with 3006 scans")
    assert str(errors[scans]).startswith("too many JPEG scans: 3006")
    ok = [i for i, e in enumerate(errors) if e is None]
    assert cosines(got[ok], want[ok]).min() > 0.999


def _fuzzed(count: int) -> Iterator[bytes]:
    """Real JPEGs after random byte flips, cuts and splices: many keep a valid header."""
    rng = np.random.default_rng(7)
    seeds = [jpeg(64, 48, seed=s) for s in range(3)] + [
        encode(photo(64, 48), "JPEG", progressive=True)
    ]
    for i in range(count):
        data = bytearray(seeds[i % len(seeds)])
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(2, len(data)))
            kind = rng.integers(0, 3)
            if kind == 0:
                data[at] ^= 1 << int(rng.integers(0, 8))
            elif kind == 1:
                data[at : at + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
            else:
                del data[at : at + int(rng.integers(1, 64))]
        yield bytes(data)


def test_fuzzed_jpegs_get_the_same_verdict_on_both_paths(
    pair: tuple[fx.FeatureExtractor, fx.FeatureExtractor],
) -> None:
    pillow, gpu = pair
    inputs = list(_fuzzed(300))
    _, want_errors = pillow.extract(inputs)
    _, errors, on_gpu = decoded_on_gpu(gpu, inputs)
    assert on_gpu > 50 and sum(e is not None for e in errors) > 20  # both kinds ran
    mismatched = [
        (i, a, b) for i, (a, b) in enumerate(zip(errors, want_errors, strict=True)) if a != b
    ]
    assert not mismatched, mismatched[:5]


def test_every_family_gives_the_cpu_paths_features_through_the_gpu_path(tmp_path: object) -> None:
    from pathlib import Path

    import families

    folder = Path(str(tmp_path))
    photos = [jpeg(300 + 37 * i, 400 - 29 * i, seed=i) for i in range(6)]
    models = {
        "torchvision": {"model": "resnet18"},
        "timm": {"model": f"timm:{families.TIMM_ARCH}"},
        "open_clip": {"model": f"open_clip:{families.OPEN_CLIP_ARCH}"},
        "hf clip": {"model": f"hf:{families.save_tiny_clip(folder / 'clip')}"},
        "hf dinov2": {"model": f"hf:{families.save_tiny_dinov2(folder / 'dino')}"},
    }
    for name, options in models.items():
        pillow, gpu = engines(**options)
        assert pillow.loaded.preprocessing is not None, name
        want, want_errors = pillow.extract(photos)
        got, errors, on_gpu = decoded_on_gpu(gpu, photos)
        assert errors == want_errors == [None] * len(photos) and on_gpu == len(photos), name
        assert cosines(got, want).min() >= 0.9999, (name, cosines(got, want).min())


def test_decode_gpu_without_cuda_fails_the_task_in_one_line() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    engine = fx.FeatureExtractor("resnet18", weights=None, decode="gpu")  # device="auto"
    with pytest.raises(RuntimeError, match=r"^decode='gpu' but the model runs on cpu \(no CUDA"):
        engine.extract([jpeg(64, 48)])


def test_a_transform_of_ones_own_is_decoded_on_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    def mine(image: Image.Image) -> torch.Tensor:
        return torch.zeros(3, 32, 32) + float(np.asarray(image.resize((4, 4))).mean())

    engine = fx.FeatureExtractor(tiny_cnn, weights=None, device="cpu", transform=mine)
    engine._decoder_device = CPU
    with caplog.at_level(logging.WARNING):
        _, errors, on_gpu = decoded_on_gpu(engine, [jpeg(64, 48), jpeg(64, 48, seed=1)])
    assert errors == [None, None] and on_gpu == 0
    assert any("decoded and preprocessed on the CPU" in r.message for r in caplog.records)


class _OutOfMemoryAbove(torch.nn.Module):
    """A tiny CNN that raises CUDA's out-of-memory error on batches over 2 rows."""

    raised = 0

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:
            _OutOfMemoryAbove.raised += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def out_of_memory_above_two() -> torch.nn.Module:
    torch.manual_seed(0)
    return _OutOfMemoryAbove()


def plain_tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_cnn()


def test_an_out_of_memory_batch_is_halved_and_no_row_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from featurex.models import warn_once

    warn_once.cache_clear()
    images = [jpeg(80 + 8 * i, 60, seed=i) for i in range(14)]
    options = {"weights": None, "device": "cpu", "batch_size": 7}
    want, _ = fx.FeatureExtractor(plain_tiny_cnn, **options).extract(images)  # type: ignore[arg-type]
    _OutOfMemoryAbove.raised = 0
    with caplog.at_level(logging.WARNING):
        got, errors = fx.FeatureExtractor(out_of_memory_above_two, **options).extract(images)  # type: ignore[arg-type]
    assert errors == [None] * 14
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    halving = [r for r in caplog.records if "CUDA out of memory: running batches" in r.message]
    assert len(halving) == 1  # one warning, however many halvings
    # The first batch of 7 fails at 7 and at 4, then runs as 2 + 2 + 2 + 1; the second starts
    # from the 2 that fit, without another out-of-memory error.
    assert _OutOfMemoryAbove.raised == 2


def test_encoded_bytes_are_staged_in_one_reused_buffer() -> None:
    from featurex.decode.preprocess import Preprocessing

    pre = Preprocessing(resize=32, crop=(32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    decoder = gpu_decode.GpuDecoder(CPU, pre, lambda d: (None, "not used"))
    files = [jpeg(64, 48, seed=s) for s in range(3)]
    first = decoder._stage(files)
    buffer = decoder._staging.data_ptr()
    again = decoder._stage(files[:2])
    assert decoder._staging.data_ptr() == buffer  # no new buffer for a smaller batch
    for view, data in zip(first[:2], files, strict=False):
        assert view.numpy().tobytes() == data
    assert again[0].data_ptr() == buffer


def test_only_complete_plain_jpegs_are_left_to_the_gpu_decoder() -> None:
    # nvJPEG decodes a truncated file without a word and raises on CMYK; torchvision's CPU
    # decoder (the stand-in above) refuses both, so this is checked at the header.
    from featurex.decode.header import gpu_jpeg, open_image

    def route(data: bytes) -> int | None:
        return gpu_jpeg(open_image(data, 10**8), data)

    good = jpeg(160, 120, seed=3)
    start, eoi = good.rindex(b"\xff\xda"), good.rindex(b"\xff\xd9")
    assert route(good) == 1
    assert route(good + b"\x00trailing bytes" * 8) == 1
    assert route(with_orientation(photo(40, 30), 6)) == 6
    assert route(encode(photo(40, 30).convert("L"), "JPEG")) == 1
    for cut in (eoi, eoi - 1, (start + eoi) // 2, start + 16):
        assert route(good[:cut]) is None, cut
    assert route(encode(photo(40, 30).convert("CMYK"), "JPEG")) is None
    assert route(encode(photo(40, 30), "PNG")) is None
