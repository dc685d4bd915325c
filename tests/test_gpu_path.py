"""The GPU decoder's logic, on the CPU: torchvision's `decode_jpeg` decodes the same batches
there (libjpeg-turbo instead of nvJPEG), so routing, retries, the header checks, EXIF and the
verdict per file run through the same code as on a GPU (`FeatureExtractor._decoder_device`).
What only CUDA has (nvJPEG, pinned buffers, streams, memory) is in tests/test_gpu.py."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from functools import lru_cache

import hostile
import numpy as np
import pytest
import torch
from images import encode, jpeg, photo, with_orientation
from models_for_tests import tiny_cnn
from PIL import Image
from torchvision import transforms as T

import featurex as fx
from featurex.config import DEFAULT_MAX_PIXELS
from featurex.decode import gpu as gpu_decode
from featurex.decode.preprocess import Preprocessing
from featurex.errors import ConfigError

CPU = torch.device("cpu")
PRE = Preprocessing(resize=64, crop=(64, 64), mean=(0, 0, 0), std=(1, 1, 1))


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
    assert on_gpu == 2  # the baseline and grayscale JPEGs; progressive ones stay with Pillow
    assert errors == want_errors
    assert errors[5] is not None and errors[5].startswith("OSError: image file is truncated")
    ok = [i for i, e in enumerate(errors) if e is None]
    assert ok == [0, 1, 2, 3, 4, 6]
    assert cosines(got[ok], want[ok]).min() > 0.9999


def test_a_batch_that_fails_is_retried_by_halves_and_the_refused_file_goes_to_pillow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pillow, gpu = engines(batch_size=8)  # one decode call of 8
    inputs: list[object] = [jpeg(100 + 10 * i, 90, seed=i) for i in range(8)]
    refused = inputs[5]
    real = gpu_decode._decode

    def refusing(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        if any(t.numpy().tobytes() == refused for t in encoded):
            raise RuntimeError("Error while decoding JPEG images: nvjpegDecode failed: 7")
        return real(encoded, device)

    monkeypatch.setattr(gpu_decode, "_decode", refusing)
    calls = gpu_decode.STATS["calls"]
    got, errors, on_gpu = decoded_on_gpu(gpu, inputs)
    # 8 fails; 4 + 4 (one fails); 2 + 2 (one fails); 1 + 1 (one fails): 7 calls, not 1 + 8.
    assert gpu_decode.STATS["calls"] - calls == 7
    assert on_gpu == 7 and errors == [None] * 8
    want, _ = pillow.extract(inputs)
    assert cosines(got, want).min() > 0.9999  # the refused file's row is Pillow's


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
    ((got, reason),) = decoder.decode([encoded])
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


def test_a_progressive_jpeg_is_decoded_by_pillow_in_the_decode_threads() -> None:
    # prepare() is what the decode threads run: a tensor means Pillow decoded it there, not
    # nvJPEG's hybrid decoder on the main thread.
    from featurex.decode import Decoding, Encoded, prepare
    from featurex.decode.preprocess import Preprocessing

    pre = Preprocessing(resize=32, crop=(32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    how = Decoding(lambda image: image, pre, DEFAULT_MAX_PIXELS, gpu=True)
    progressive, _ = prepare(encode(photo(64, 48), "JPEG", progressive=True), how)
    baseline, _ = prepare(jpeg(64, 48), how)
    assert isinstance(progressive, torch.Tensor) and isinstance(baseline, Encoded)


def test_decode_gpu_with_a_transform_that_cannot_run_on_tensors_is_refused_on_the_driver() -> None:
    with pytest.raises(ConfigError, match=r"^decode='gpu' needs preprocessing featurex can"):
        fx.FeatureExtractor("resnet18", weights=None, decode="gpu", transform=lambda im: im)


# --------------------------------------------------------------------------- the resize

CLIP_LIKE = T.Compose(
    [
        T.Resize((224, 224), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize((0.48, 0.46, 0.41), (0.27, 0.26, 0.28)),
    ]
)


@lru_cache(maxsize=1)
def big_ones() -> dict[str, bytes]:
    return {
        # 15 photos side by side: generating 60 Mpx of noise takes 20 s, tiling 4 Mpx, 2 s
        "panorama 30000x2000": encode(
            Image.fromarray(np.tile(np.asarray(photo(2000, 2000, seed=3)), (1, 15, 1))), "JPEG"
        ),
        "12 Mpx": jpeg(4000, 3000, seed=4),
        "strip 1x4000": encode(photo(1, 4000, seed=5), "JPEG"),
        "strip 4000x1": encode(photo(4000, 1, seed=5), "JPEG"),
    }


@pytest.mark.parametrize(
    ("options", "names"),
    [
        (
            {"transform": CLIP_LIKE},
            ["panorama 30000x2000", "12 Mpx", "strip 1x4000", "strip 4000x1"],
        ),
        ({}, ["12 Mpx"]),  # resnet18: bilinear, short side 256 (a strip would be too elongated)
    ],
    ids=["bicubic to 224x224", "resnet18"],
)
def test_big_photos_panoramas_and_strips_give_the_pillow_paths_features(
    options: dict[str, object], names: list[str]
) -> None:
    pillow, gpu = engines(**options)
    photos = [big_ones()[name] for name in names]
    want, want_errors = pillow.extract(photos)
    got, errors, on_gpu = decoded_on_gpu(gpu, photos)
    assert errors == want_errors == [None] * len(photos) and on_gpu == len(photos)
    assert cosines(got, want).min() >= 0.9999, cosines(got, want)


# PyTorch's CUDA antialiased kernel runs with at least one row of 32 threads per block:
# 32 * window_w + 33 * window_h floats of shared memory, at most 48 KB.
SHARED_FLOATS = 48 * 1024 // 4


def test_the_gpu_resize_reads_a_bounded_window_for_any_shape() -> None:
    from featurex.decode.preprocess import aa_window, box_factors, separable

    sizes = [(2000, 30000), (3000, 4000), (4000, 1), (1, 4000), (65500, 65500), (224, 224),
             (100, 150), (6000, 900), (513, 257)]  # fmt: skip
    most = {"bilinear": (35, 3), "bicubic": (67, 5)}  # taps along the pass's axis, across it
    for (height, width), target, mode in itertools.product(
        sizes, [(224, 224), (256, 256), (518, 518), (224, 3360)], ["bilinear", "bicubic"]
    ):
        factors = box_factors((height, width), target)
        shape = (-(-height // factors[0]), -(-width // factors[1]))
        # The box step reads each input pixel once: its cost is the image's, not per output.
        assert shape[0] * factors[0] >= height and shape[1] * factors[1] >= width
        for step in separable(shape, target):
            wh, ww = (aa_window(n, t, mode) for n, t in zip(shape, step, strict=True))  # type: ignore[arg-type]
            assert max(wh, ww) <= most[mode][0] and min(wh, ww) <= most[mode][1], (shape, step)
            assert 32 * ww + 33 * wh <= SHARED_FLOATS
            shape = step
        assert shape == target
    # In one 2-D pass, the panorama to 224x224 in bicubic is past the kernel's limit (the
    # crash), and a 12 Mpx photo to 224 reads 37 x 37 taps per output value (2 x 37 x 5 here).
    assert 32 * aa_window(30000, 224, "bicubic") + 33 * aa_window(2000, 224, "bicubic") > (
        SHARED_FLOATS
    )
    assert aa_window(3000, 336, "bicubic") == 37


# --------------------------------------------------------------------------- memory


def encoded(files: list[bytes]) -> list[object]:
    from featurex.decode import Decoding, prepare

    how = Decoding(lambda image: image, PRE, DEFAULT_MAX_PIXELS, gpu=True)
    return [prepare(data, how)[0] for data in files]


def from_pillow(data: object) -> tuple[torch.Tensor | None, str | None]:
    return torch.full((3, 32, 32), -1.0), None  # a mark: this row went to the Pillow path


def big_photos() -> list[bytes]:
    return [jpeg(1000, 800, seed=s) for s in range(6)]  # 0.8 Mpx each


def test_the_pixel_budget_splits_a_batch_of_large_photos_and_no_row_is_lost() -> None:
    files = encoded(big_photos())
    want = gpu_decode.GpuDecoder(CPU, PRE, from_pillow).decode(files)  # type: ignore[arg-type]
    calls = gpu_decode.STATS["calls"]
    split = gpu_decode.GpuDecoder(CPU, PRE, from_pillow, pixel_budget=2_000_000)
    got = split.decode(files)  # type: ignore[arg-type]
    assert gpu_decode.STATS["calls"] - calls == 3  # 2 photos a call
    for (a, _), (b, _) in zip(got, want, strict=True):
        assert a is not None and b is not None and torch.equal(a, b) and a.min() >= 0


def test_out_of_memory_in_the_resize_halves_the_budget_and_no_row_is_lost(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    files = encoded(big_photos())
    want = gpu_decode.GpuDecoder(CPU, PRE, from_pillow).decode(files)  # type: ignore[arg-type]
    decoder = gpu_decode.GpuDecoder(CPU, PRE, from_pillow)
    real_decode, real_crop, held = gpu_decode._decode, gpu_decode.crop_tensor, [0]

    def decode(inputs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        held[0] = len(inputs)  # what the call holds, decoded, while its images are resized
        return real_decode(inputs, device)

    def tight(pixels: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if held[0] > 2:  # room for two decoded photos and the float copy of one
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 MiB")
        return real_crop(pixels, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gpu_decode, "_decode", decode)
    monkeypatch.setattr(gpu_decode, "crop_tensor", tight)
    with caplog.at_level(logging.WARNING, logger="featurex.decode.gpu"):
        got = decoder.decode(files)  # type: ignore[arg-type]
    # 6 fails: 3 + 3 fail, 2 + 1 and 2 + 1 fit; the budget halved at each failure.
    assert decoder.budget == gpu_decode.PIXEL_BUDGET // 8
    assert any("CUDA out of memory while decoding JPEGs" in r.message for r in caplog.records)
    for (a, _), (b, _) in zip(got, want, strict=True):
        assert a is not None and b is not None and torch.equal(a, b)  # all on the GPU path


def test_torchvisions_out_of_memory_message_is_out_of_memory_and_alone_goes_to_pillow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = encoded(big_photos()[:4])
    decoder = gpu_decode.GpuDecoder(CPU, PRE, from_pillow)
    real = gpu_decode._decode

    def tight(inputs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        if len(inputs) > 1 or inputs[0].numel() == len(files[3].data):  # type: ignore[attr-defined]
            raise RuntimeError(
                "Error while decoding JPEG images: CUDA out of memory. Tried to allocate 2.00 GiB"
            )
        return real(inputs, device)

    monkeypatch.setattr(gpu_decode, "_decode", tight)
    got = decoder.decode(files)  # type: ignore[arg-type]
    assert decoder.budget < gpu_decode.PIXEL_BUDGET  # taken for out of memory, not a refusal
    assert [float(t.min()) >= 0 for t, _ in got] == [True, True, True, False]  # type: ignore[union-attr]


def test_a_resize_that_fails_on_the_gpu_sends_that_image_to_pillow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = encoded([jpeg(300, 200, seed=1), jpeg(3000, 200, seed=2), jpeg(300, 200, seed=3)])
    real = gpu_decode.crop_tensor

    def picky(pixels: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if pixels.shape[-1] == 3000:
            raise RuntimeError("Too much shared memory required: 73728 vs 49152")
        return real(pixels, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gpu_decode, "crop_tensor", picky)
    got = gpu_decode.GpuDecoder(CPU, PRE, from_pillow).decode(files)  # type: ignore[arg-type]
    assert [float(t.min()) >= 0 for t, _ in got] == [True, False, True]  # type: ignore[union-attr]


def test_out_of_memory_while_normalizing_is_halved_like_the_forward_pass() -> None:
    from featurex.models import warn_once

    warn_once.cache_clear()
    engine = fx.FeatureExtractor(plain_tiny_cnn, weights=None, device="cpu")
    loaded = engine.loaded
    crops = [torch.rand(3, 32, 32) for _ in range(7)]
    sizes = []

    def normalize(part: list[torch.Tensor]) -> torch.Tensor:
        sizes.append(len(part))
        if len(part) > 2:
            raise RuntimeError("CUDA error: out of memory")
        return torch.stack(part)

    got = engine._forward(loaded, crops, normalize)
    want = engine._forward(loaded, torch.stack(crops))
    torch.testing.assert_close(got, want)
    assert sizes == [7, 4, 2, 2, 2, 1]
