"""What only CUDA has: nvJPEG, pinned buffers, batches in flight on a stream, out-of-memory
halving under a real memory cap, and K processes sharing one GPU. Skipped without a GPU
(tests/conftest.py); `pytest -m gpu` runs them on a GPU machine, from the checkout."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import hostile
import numpy as np
import pytest
import torch
from images import encode, jpeg, photo, with_orientation
from PIL import Image

import featurex as fx
from featurex.decode import gpu as gpu_decode
from featurex.decode.header import Encoded

pytestmark = pytest.mark.gpu
TESTS = Path(__file__).parent
ROOT = TESTS.parent
CUDA = torch.device("cuda", 0)  # the device the engine resolves "auto" and "cuda" to


@lru_cache(maxsize=1)
def photos() -> list[bytes]:
    """40 photos of 300 to 1,000 px, portrait and landscape."""
    return [jpeg(300 + 37 * (i % 20), 500 - 11 * (i % 20), seed=i) for i in range(40)]


def encoded(files: list[bytes]) -> list[Encoded]:
    return [
        Encoded(f, 1, Image.open(io.BytesIO(f)).width * Image.open(io.BytesIO(f)).height)
        for f in files
    ]


@lru_cache(maxsize=1)
def photos_24mpx() -> list[bytes]:
    """6 photos of 6000x4000 (tiles of a 1500x1000 photo: quick to make)."""
    return [
        encode(Image.fromarray(np.tile(np.asarray(photo(1500, 1000, seed=s)), (4, 4, 1))), "JPEG")
        for s in range(6)
    ]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def pair(**options: object) -> tuple[fx.FeatureExtractor, fx.FeatureExtractor]:
    options = {"model": "resnet18", "weights": None, "device": "cuda", "batch_size": 16, **options}
    return (
        fx.FeatureExtractor(**options, decode="cpu"),  # type: ignore[arg-type]
        fx.FeatureExtractor(**options, decode="gpu"),  # type: ignore[arg-type]
    )


def test_nvjpeg_is_available_and_decode_auto_picks_it() -> None:
    assert gpu_decode.available(CUDA)
    engine = fx.FeatureExtractor("resnet18", weights=None, device="cuda")  # decode="auto"
    _, decoder = engine.decoding(engine.loaded)
    assert decoder is not None and decoder.device == CUDA


@pytest.mark.parametrize("device", ["auto", "cuda", "cuda:0"])
def test_the_model_s_device_has_its_index(device: str) -> None:
    # Tensors on the GPU say cuda:0, and torch.device("cuda") != torch.device("cuda:0"): an
    # index-less device failed every "already there" check (and an assert) on the GPU path.
    engine = fx.FeatureExtractor("resnet18", weights=None, device=device, batch_size=4)
    assert engine.loaded.device == CUDA
    features, errors = engine.extract(photos()[:6])
    assert errors == [None] * 6 and np.isfinite(features).all()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_nvjpeg_features_match_the_pillow_paths(precision: str) -> None:
    pillow, gpu = pair(precision=precision)
    want, want_errors = pillow.extract(photos())
    before = gpu_decode.STATS["decoded"]
    got, errors = gpu.extract(photos())  # 40 images: batches of 16 in flight on the stream
    assert gpu_decode.STATS["decoded"] - before == len(photos())
    assert errors == want_errors == [None] * len(photos())
    assert cosines(got, want).min() >= 0.9999


def test_nvjpeg_gives_the_hostile_corpus_the_pillow_verdicts() -> None:
    pillow, gpu = pair()
    inputs = [c.data for c in hostile.corpus()]
    _, want = pillow.extract(inputs)
    _, got = gpu.extract(inputs)
    assert got == want


@pytest.mark.parametrize("orientation", range(1, 9))
def test_nvjpeg_applies_exif_orientation(orientation: int) -> None:
    pillow, gpu = pair()
    data = [with_orientation(photo(320, 200, seed=orientation), orientation)]
    assert cosines(gpu.extract(data)[0], pillow.extract(data)[0]).min() >= 0.9999


def test_what_nvjpeg_refuses_goes_to_pillow() -> None:
    pillow, gpu = pair()
    inputs = [
        encode(photo(200, 150).convert("CMYK"), "JPEG"),
        encode(photo(200, 150), "PNG"),
        *photos()[:3],
    ]
    want, want_errors = pillow.extract(inputs)
    got, errors = gpu.extract(inputs)
    assert errors == want_errors == [None] * 5
    assert cosines(got, want).min() >= 0.9999


def test_encoded_bytes_go_through_one_pinned_buffer() -> None:
    from featurex.decode.preprocess import Preprocessing

    pre = Preprocessing(resize=32, crop=(32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    decoder = gpu_decode.GpuDecoder(CUDA, pre, lambda d: (None, "unused"))
    decoder.decode(encoded(photos()[:8]))
    assert decoder._staging.is_pinned()
    pointer = decoder._staging.data_ptr()
    results = decoder.decode(encoded(photos()[:4]))
    assert decoder._staging.data_ptr() == pointer  # reused, not allocated again
    assert all(t is not None and t.is_cuda and t.dtype == torch.float32 for t, _ in results)


def _python(script: str, timeout: float = 300) -> list[dict[str, object]]:
    prelude = f"import sys, json\nsys.path[:0] = [{str(TESTS)!r}, {str(ROOT)!r}]\n"
    done = subprocess.run([sys.executable, "-c", prelude + script], capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_an_out_of_memory_batch_is_halved_under_a_memory_cap() -> None:
    # 1.5 GiB for ResNet-50 in fp32: a batch of 512 at 224x224 does not fit, 32 do.
    ((result,),) = [
        _python(
            "import numpy as np, torch, featurex as fx\n"
            "from images import jpeg\n"
            "images = [jpeg(256, 256, seed=i % 8) for i in range(512)]\n"
            "small, _ = fx.FeatureExtractor('resnet50', weights=None, device='cuda', batch_size=16).extract(images)\n"
            "torch.cuda.empty_cache()\n"
            "total = torch.cuda.get_device_properties(0).total_memory\n"
            "torch.cuda.set_per_process_memory_fraction(1.5 * 2**30 / total)\n"
            "big, errors = fx.FeatureExtractor('resnet50', weights=None, device='cuda', batch_size=512).extract(images)\n"
            "err = float((np.linalg.norm(big - small, axis=1) / np.linalg.norm(small, axis=1)).max())\n"
            "print(json.dumps({'errors': sum(e is not None for e in errors), 'err': err}))\n"
        )
    ]
    assert result["errors"] == 0 and float(result["err"]) < 1e-3  # type: ignore[arg-type]


def test_four_processes_share_one_gpu_each_loading_its_model_once() -> None:
    script = (
        "import featurex as fx\n"
        "from images import jpeg\n"
        "engine = fx.FeatureExtractor('resnet18', weights=None, device='cuda')\n"
        "images = [jpeg(200, 160, seed=i) for i in range(64)]\n"
        "for _ in range(3):\n"
        "    features, errors = engine.extract(images)\n"
        "print(json.dumps({'loads': fx.cache_info()['loads'], 'failed': sum(e is not None for e in errors),\n"
        "                  'first': features[0][:4].tolist()}))\n"
    )
    prelude = f"import sys, json\nsys.path[:0] = [{str(TESTS)!r}, {str(ROOT)!r}]\n"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", prelude + script], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4
    assert [o["loads"] for o in outs] == [1] * 4 and [o["failed"] for o in outs] == [0] * 4
    np.testing.assert_allclose([o["first"] for o in outs], [outs[0]["first"]] * 4, rtol=1e-3)


def test_nvjpeg_gives_fuzzed_jpegs_the_pillow_verdicts() -> None:
    from test_gpu_path import _fuzzed

    pillow, gpu = pair()
    inputs = list(_fuzzed(300))
    _, want = pillow.extract(inputs)
    before = gpu_decode.STATS["decoded"]
    _, got = gpu.extract(inputs)
    assert gpu_decode.STATS["decoded"] - before > 50
    mismatched = [(i, a, b) for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b]
    assert not mismatched, mismatched[:5]


def test_a_panorama_is_resized_on_the_gpu_without_crashing() -> None:
    # In one pass, CUDA's antialiased bicubic kernel refuses 30000x2000 -> 224x224 ("Too much
    # shared memory required"); the box step first keeps its window small.
    from test_gpu_path import CLIP_LIKE, big_ones

    pillow, gpu = pair(transform=CLIP_LIKE)
    inputs = list(big_ones().values())
    want, want_errors = pillow.extract(inputs)
    before = gpu_decode.STATS["decoded"]
    got, errors = gpu.extract(inputs)
    assert gpu_decode.STATS["decoded"] - before == len(inputs)
    assert errors == want_errors == [None] * len(inputs)
    assert cosines(got, want).min() >= 0.9999


def test_a_batch_of_24_mpx_photos_is_decoded_within_the_pixel_budget() -> None:
    from featurex.decode.preprocess import Preprocessing

    pre = Preprocessing(resize=256, crop=(224, 224), mean=(0, 0, 0), std=(1, 1, 1))
    decoder = gpu_decode.GpuDecoder(CUDA, pre, lambda d: (None, "unused"))
    files = encoded(photos_24mpx())
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(CUDA)
    base = torch.cuda.memory_allocated(CUDA)
    calls = gpu_decode.STATS["calls"]
    results = decoder.decode(files)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated(CUDA) - base
    assert gpu_decode.STATS["calls"] - calls == 3  # 2 photos of 24 Mpx in 64 Mpx a call
    assert all(t is not None and t.shape == (3, 224, 224) for t, _ in results)
    # Two decoded photos (uint8) and one float copy, with room for the box step's output.
    one = 6000 * 4000 * 3
    assert peak < 2 * one + 4 * one + 64 * 2**20, peak


def test_progressive_jpegs_are_decoded_by_pillow_not_by_nvjpeg() -> None:
    pillow, gpu = pair()
    inputs = [encode(photo(400, 300, seed=s), "JPEG", progressive=True) for s in range(4)]
    want, _ = pillow.extract(inputs)
    before = gpu_decode.STATS["decoded"]
    got, errors = gpu.extract(inputs)
    assert gpu_decode.STATS["decoded"] == before and errors == [None] * 4
    assert cosines(got, want).min() >= 0.9999


def test_out_of_memory_while_preprocessing_under_a_memory_cap_loses_no_row() -> None:
    # 400 MiB: two decoded 24 Mpx photos (144 MiB) and the float copy of one (288 MiB) do not
    # fit beside resnet18; the decoder halves its budget (or sends a photo to Pillow).
    ((result,),) = [
        _python(
            "import numpy as np, torch, featurex as fx\n"
            "from featurex.decode import gpu as gpu_decode\n"
            "from test_gpu import photos_24mpx\n"
            "images = photos_24mpx()\n"
            "want, _ = fx.FeatureExtractor('resnet18', weights=None, device='cuda', decode='cpu').extract(images)\n"
            "torch.cuda.empty_cache()\n"
            "total = torch.cuda.get_device_properties(0).total_memory\n"
            "torch.cuda.set_per_process_memory_fraction(400 * 2**20 / total)\n"
            "got, errors = fx.FeatureExtractor('resnet18', weights=None, device='cuda', decode='gpu', batch_size=8).extract(images)\n"
            "cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)\n"
            "print(json.dumps({'errors': sum(e is not None for e in errors), 'cos': float(cos.min()),\n"
            "                  'stats': gpu_decode.STATS}))\n"
        )
    ]
    stats = result["stats"]
    assert result["errors"] == 0 and float(result["cos"]) >= 0.9999, result  # type: ignore[arg-type]
    assert stats["calls"] > 1 or stats["refused"] > 0, result  # type: ignore[index,operator]
