"""The Spark-free engine: equal to torchvision by hand, re-chunking, errors, the cache."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from images import jpeg
from models_for_tests import assert_close, batch_probe, reference_features, tiny_cnn

import featurex as fx
from featurex._cache import KeyedCache
from featurex.errors import ImageError

IMAGES = [jpeg(160 + 40 * i, 300 - 30 * i, seed=i) for i in range(6)]


@pytest.mark.parametrize(("batch_size", "threads"), [(1, 1), (4, 1), (32, 1), (3, 4)])
def test_features_equal_plain_torchvision(batch_size: int, threads: int) -> None:
    extractor = fx.FeatureExtractor(
        "resnet18", weights=None, batch_size=batch_size, device="cpu", decode_threads=threads
    )
    features, errors = extractor.extract(IMAGES)
    assert errors == [None] * len(IMAGES)
    assert_close(features, reference_features(IMAGES, "resnet18"))


def test_bad_rows_are_nan_with_a_reason_and_order_is_kept() -> None:
    extractor = fx.FeatureExtractor("resnet18", weights=None, batch_size=2, device="cpu")
    inputs = [IMAGES[0], None, b"garbage", IMAGES[1], b"", IMAGES[2]]
    features, errors = extractor.extract(inputs)
    assert features.shape == (6, 512)
    assert [e is None for e in errors] == [True, False, False, True, False, True]
    assert errors[1] == "null input" and "not an image" in str(errors[2])
    assert np.isnan(features[[1, 2, 4]]).all() and np.isfinite(features[[0, 3, 5]]).all()
    assert_close(features[[0, 3, 5]], reference_features(IMAGES[:3], "resnet18"))


def test_on_error_raise_names_the_row_and_reason() -> None:
    extractor = fx.FeatureExtractor("resnet18", weights=None, device="cpu", on_error="raise")
    with pytest.raises(ImageError, match=r"input row 1: not an image"):
        extractor.extract([IMAGES[0], b"garbage"])


@pytest.mark.parametrize("threads", [1, 4])
def test_batches_are_rechunked_to_batch_size_across_inputs(threads: int) -> None:
    # The probe outputs the size of the batch each row ran in.
    extractor = fx.FeatureExtractor(
        batch_probe, weights=None, batch_size=4, device="cpu", decode_threads=threads
    )
    inputs = [[IMAGES[0]] * 3, [], [IMAGES[1]], [IMAGES[2], None, IMAGES[3]], [IMAGES[4]] * 6]
    results = list(extractor.extract_batches(inputs))
    assert [len(errors) for _, errors in results] == [3, 0, 1, 3, 6]
    sizes = np.concatenate([f[:, 0] for f, _ in results if len(f)])
    ok = ~np.isnan(sizes)
    # 12 good rows: batches of exactly 4, 4, 4 although no input batch had 4 rows.
    assert sizes[ok].tolist() == [4.0] * 12
    assert results[3][1][1] == "null input"


def test_a_single_row_works() -> None:
    extractor = fx.FeatureExtractor(batch_probe, weights=None, batch_size=8, device="cpu")
    features, errors = extractor.extract([IMAGES[0]])
    assert features.tolist() == [[1.0]] and errors == [None]


def test_a_factory_with_every_row_failed_keeps_its_width() -> None:
    extractor = fx.FeatureExtractor(tiny_cnn, weights=None, device="cpu", batch_size=2)
    results = list(extractor.extract_batches([[None], [IMAGES[0]], [b"x", b"y"]]))
    assert [f.shape for f, _ in results] == [(1, 8), (1, 8), (2, 8)]


def test_a_transform_that_does_not_crop_fails_clearly() -> None:
    from torchvision.transforms import functional as TF

    extractor = fx.FeatureExtractor("resnet18", weights=None, device="cpu", transform=TF.to_tensor)
    with pytest.raises(ValueError, match="transform returned tensors of different shapes"):
        extractor.extract([jpeg(100, 80), jpeg(90, 70)])
    uint8 = fx.FeatureExtractor("resnet18", weights=None, device="cpu", transform=TF.pil_to_tensor)
    with pytest.raises(
        TypeError, match=r"a float CHW image tensor, got \(3, 288, 320\) torch\.uint8"
    ):
        uint8.extract([jpeg(100, 80)])
    not_a_tensor = fx.FeatureExtractor(
        "resnet18", weights=None, device="cpu", transform=lambda image: image
    )
    with pytest.raises(
        TypeError, match="transform must return a float CHW image tensor, got Image"
    ):
        not_a_tensor.extract([jpeg(100, 80)])


def test_all_failed_and_empty_batches_keep_their_shape() -> None:
    extractor = fx.FeatureExtractor("resnet18", weights=None, device="cpu")
    features, errors = extractor.extract([None, b"x"])
    assert features.shape == (2, 512) and np.isnan(features).all() and None not in errors
    features, errors = extractor.extract([])
    assert features.shape == (0, 512) and errors == []


def test_bf16_is_close_to_fp32() -> None:
    fp32, _ = fx.FeatureExtractor("resnet18", weights=None, device="cpu").extract(IMAGES)
    bf16, _ = fx.FeatureExtractor("resnet18", weights=None, device="cpu", precision="bf16").extract(
        IMAGES
    )
    assert bf16.dtype == np.float32
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.99


def test_one_load_per_config_in_a_process() -> None:
    before = fx.cache_info()
    for _ in range(3):
        fx.FeatureExtractor("resnet18", weights=None, seed=11, device="cpu").extract(IMAGES[:1])
    after = fx.cache_info()
    assert after["loads"] - before["loads"] == 1
    assert after["hits"] - before["hits"] >= 2


def test_cache_builds_once_under_concurrent_misses() -> None:
    cache: KeyedCache[object] = KeyedCache(maxsize=2)
    builds: list[int] = []
    barrier = threading.Barrier(8)

    def build() -> object:
        builds.append(1)
        threading.Event().wait(0.05)  # a slow load widens any race
        return object()

    results: list[object] = []

    def worker() -> None:
        barrier.wait()
        results.append(cache.get("k", build))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert len({id(r) for r in results}) == 1
    assert cache.info() == {"loads": 1, "hits": 7, "size": 1, "maxsize": 2}


def test_cache_is_a_bounded_lru() -> None:
    cache: KeyedCache[str] = KeyedCache(maxsize=2)
    cache.get("a", lambda: "A")
    cache.get("b", lambda: "B")
    cache.get("a", lambda: "A2")  # a is now the most recent
    cache.get("c", lambda: "C")  # evicts b
    assert cache.info()["size"] == 2
    assert cache.get("a", lambda: "A3") == "A"
    assert cache.get("b", lambda: "B2") == "B2"  # rebuilt
    assert cache.info()["loads"] == 4


def test_a_failed_build_is_not_cached() -> None:
    cache: KeyedCache[str] = KeyedCache(maxsize=2)

    def fail() -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get("k", fail)
    assert cache.get("k", lambda: "ok") == "ok"
    assert cache.info()["loads"] == 1


def test_images_over_the_pixel_limit_get_a_reason() -> None:
    extractor = fx.FeatureExtractor("resnet18", weights=None, device="cpu", max_pixels=50_000)
    features, errors = extractor.extract([jpeg(200, 250), jpeg(300, 200)])
    assert errors == [None, "image too large: 300x200 = 60000 pixels, over max_pixels=50000"]
    assert np.isfinite(features[0]).all() and np.isnan(features[1]).all()


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_matches_cpu(precision: str) -> None:
    cpu, _ = fx.FeatureExtractor("resnet18", weights=None, device="cpu").extract(IMAGES)
    gpu, errors = fx.FeatureExtractor(
        "resnet18",
        weights=None,
        device="cuda",
        precision=precision,  # type: ignore[arg-type]
        decode="cpu",  # the model's numbers alone; tests/test_gpu.py compares the decoders
    ).extract(IMAGES)
    assert errors == [None] * len(IMAGES)
    if precision == "fp32":
        assert_close(gpu, cpu, rtol=1e-3)  # TF32 and cuDNN kernels differ from the CPU's
    cosine = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert cosine.min() > 0.99
