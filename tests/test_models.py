"""Models, feature sizes, weights and checkpoints: plain PyTorch, no Spark."""

from __future__ import annotations

import dataclasses
import io
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from images import jpeg
from models_for_tests import assert_close, reference_features, tiny_cnn
from PIL import Image
from safetensors.torch import save_file

import featurex as fx
import featurex.models.runtime
from featurex.config import ExtractorConfig
from featurex.errors import CheckpointError, WeightsUnavailableError
from featurex.models import Built, gpu_ordinal, load_model, read_checkpoint, task_device
from featurex.models.torchvision import ensure_weights, resolve_weights


@pytest.mark.parametrize(
    ("model", "dim"),
    [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("resnet101", 2048),
     ("resnet152", 2048), ("mobilenet_v3_small", 1024), ("efficientnet_b0", 1280),
     ("densenet121", 1024), ("convnext_tiny", 768), ("regnet_y_400mf", 440)],
)  # fmt: skip
def test_feature_size_comes_from_the_model(model: str, dim: int) -> None:
    extractor = fx.FeatureExtractor(model=model, weights=None, device="cpu")
    assert extractor.dim == dim
    features, errors = extractor.extract([jpeg(96, 80)])
    assert features.shape == (1, dim) and errors == [None]
    assert torch.isfinite(torch.from_numpy(features)).all()


def test_named_weights_bring_their_own_preprocessing() -> None:
    # ResNet-50 V2 resizes to 232, not 256: the transforms come from the weights object.
    weights = resolve_weights("resnet50", "IMAGENET1K_V2")
    assert weights is torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    assert list(weights.transforms().resize_size) == [232]
    assert resolve_weights("resnet50", "DEFAULT") is weights


def test_failed_download_says_what_to_do_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy on a closed loopback port makes the real download fail fast, online or not.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(WeightsUnavailableError) as info:
        ensure_weights("resnet18", resolve_weights("resnet18", "DEFAULT"))
    message = str(info.value)
    assert "\n" not in message
    assert "cannot download ResNet18_Weights.IMAGENET1K_V1" in message
    assert "weights='/path/to/checkpoint.pth'" in message and "weights=None" in message
    with pytest.raises(WeightsUnavailableError):  # the engine never falls back silently
        fx.FeatureExtractor(model="resnet18", weights="DEFAULT", device="cpu").extract([b""])


def _trained_resnet18(seed: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_checkpoint_weights_are_used(tmp_path: Path, suffix: str) -> None:
    state = _trained_resnet18()
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    images = [jpeg(200, 150, 1), jpeg(120, 260, 2)]
    features, _ = fx.FeatureExtractor("resnet18", weights=str(path), device="cpu").extract(images)
    assert_close(features, reference_features(images, "resnet18", state_dict=state))


def test_checkpoint_with_another_head_and_ddp_prefix_loads(tmp_path: Path) -> None:
    # Fine-tuned on 10 classes and saved from DistributedDataParallel, inside a training dict.
    state = _trained_resnet18()
    finetuned = {**state, "fc.weight": torch.randn(10, 512), "fc.bias": torch.zeros(10)}
    path = tmp_path / "finetuned.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in finetuned.items()}}, path)
    images = [jpeg(160, 160, 3)]
    features, _ = fx.FeatureExtractor("resnet18", weights=str(path), device="cpu").extract(images)
    assert_close(features, reference_features(images, "resnet18", state_dict=state))


def test_checkpoint_that_does_not_fit_fails_on_the_driver_naming_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    # At construction (on the driver, before any job), from the file's keys and a meta model.
    with pytest.raises(
        CheckpointError, match=r"does not fit the model: unexpected keys \[layer1\.2\."
    ):
        ExtractorConfig(model="resnet18", weights=str(path), device="cpu")


def test_checkpoint_with_wrong_shapes_fails_on_the_driver(tmp_path: Path) -> None:
    state = _trained_resnet18()
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a grayscale stem
    path = tmp_path / "gray.safetensors"
    save_file(state, path)
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatches .*conv1\.weight \(64, 1, 7, 7\) vs \(64, 3, 7, 7\)",
    ):
        ExtractorConfig(model="resnet18", weights=str(path))


def test_checkpoint_replaced_after_validation_is_still_checked_in_the_worker(
    tmp_path: Path,
) -> None:
    path = tmp_path / "model.pth"
    torch.save(_trained_resnet18(), path)
    config = ExtractorConfig(model="resnet18", weights=str(path), device="cpu")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(CheckpointError, match=r"unexpected keys \[layer1\.2\."):
        load_model(config)


def test_pickled_full_model_is_refused_unless_trusted(tmp_path: Path) -> None:
    torch.manual_seed(5)
    net = torchvision.models.resnet18()
    path = tmp_path / "full.pth"
    torch.save(net, path)  # a pickled module, not a state_dict
    with pytest.raises(CheckpointError, match=r"pickled Python objects .* trust_checkpoint=True"):
        ExtractorConfig(model="resnet18", weights=str(path), device="cpu")
    images = [jpeg(200, 150, 4)]
    extractor = fx.FeatureExtractor("resnet18", weights=str(path), trust_checkpoint=True)
    features, _ = extractor.extract(images)
    assert_close(features, reference_features(images, "resnet18", state_dict=net.state_dict()))


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch PWNED",))


def test_malicious_checkpoint_does_not_run_its_payload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"fc.weight": torch.zeros(1), "x": _Payload()}, f)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        ExtractorConfig(model="resnet18", weights=str(path), device="cpu")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        read_checkpoint(str(path))  # the worker's reader refuses it too
    assert not (tmp_path / "PWNED").exists()


def test_factory_model_with_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(3)
    state = tiny_cnn().state_dict()
    path = tmp_path / "tiny.pth"
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    extractor = fx.FeatureExtractor(model=tiny_cnn, weights=str(path), device="cpu", optimize=False)
    assert extractor.dim == 8
    first = extractor.loaded.module[0].weight
    assert torch.equal(first, state["0.weight"])


def test_cpu_models_run_as_a_checked_frozen_graph() -> None:
    images = [jpeg(200, 150, 5), jpeg(150, 220, 6), jpeg(90, 90, 7)]
    optimized = fx.FeatureExtractor("resnet18", weights=None, device="cpu")
    eager = fx.FeatureExtractor("resnet18", weights=None, device="cpu", optimize=False)
    assert isinstance(optimized.loaded.module, torch.jit.ScriptModule)
    assert not isinstance(eager.loaded.module, torch.jit.ScriptModule)
    assert_close(optimized.extract(images)[0], eager.extract(images)[0])
    assert_close(optimized.extract(images)[0], reference_features(images, "resnet18"))


class _Recorder(torch.nn.Module):
    """Runs a module and records the batch sizes it was given."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module, self.sizes = module, list[int]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        out: torch.Tensor = self.module(x)
        return out


def test_a_frozen_graph_runs_only_at_the_batch_size_it_was_compiled_for() -> None:
    # Its fused kernels are compiled for one input shape: a smaller batch is padded, a larger
    # one split, and neither shows in the features. Each batch size has its own graph.
    images = [jpeg(120 + 10 * i, 100, i) for i in range(7)]
    # A seed of its own: a model no other test has cached, so that this one loads it.
    model = {"model": "resnet18", "weights": None, "device": "cpu", "seed": 11}
    small = fx.FeatureExtractor(**model, batch_size=3)
    assert small.loaded.graph_batch == 3
    assert not torch.jit.onednn_fusion_enabled()  # the process-wide flag is put back
    larger = fx.FeatureExtractor(**model, batch_size=5)
    assert larger.loaded.graph_batch == 5  # its own graph: never 1 image padded to 3
    eager = fx.FeatureExtractor(**model, optimize=False)
    assert eager.loaded.graph_batch is None
    want = eager.extract(images)[0]
    assert_close(small.extract(images)[0], want)  # 3 + 3 + 1 padded
    if hasattr(torch._C, "_jit_llga_enabled"):  # torch builds with oneDNN Graph: it fused
        assert "oneDNNFusionGroup" in str(torch.jit.last_executed_optimized_graph())  # type: ignore[attr-defined]
    assert_close(larger.extract(images)[0], want)  # 5 + 2 padded

    recorder = _Recorder(small.loaded.module)
    loaded = dataclasses.replace(small.loaded, module=recorder)
    batch = torch.stack([loaded.transform(Image.open(io.BytesIO(b))) for b in images])
    assert_close(small._forward(loaded, batch).numpy(), want)
    assert recorder.sizes == [3, 3, 3]


def _conv_bn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    )  # fmt: skip


def test_the_eager_model_is_freed_before_the_graph_is_compiled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The load's memory peak: the eager weights must be gone when the fusion packs its own.
    runtime = featurex.models.runtime
    real_build, real_fuse = runtime._build, runtime._fuse
    built: list[weakref.ref[torch.nn.Module]] = []
    alive_at_fuse: list[bool] = []

    def build(config: ExtractorConfig) -> Built:
        result = real_build(config)
        built.append(weakref.ref(result.module))
        return result

    def fuse(*args: object, **kwargs: object) -> bool:
        alive_at_fuse.append(built[-1]() is not None)
        return real_fuse(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime, "_build", build)
    monkeypatch.setattr(runtime, "_fuse", fuse)
    loaded = load_model(ExtractorConfig(model=_conv_bn, weights=None, device="cpu", optimize=True))
    assert isinstance(loaded.module, torch.jit.ScriptModule)
    assert alive_at_fuse == [False]


class _BatchDependent(torch.nn.Module):
    """Python control flow on the batch size: tracing would bake in one branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)  # weights from the seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(x).mean(dim=(2, 3))
        return pooled if x.shape[0] < 3 else pooled * 2


def test_a_model_that_traces_wrongly_stays_eager(caplog: pytest.LogCaptureFixture) -> None:
    # A factory is left eager by default; asked to optimize, the load-time check catches it.
    assert isinstance(
        fx.FeatureExtractor(model=_BatchDependent, weights=None).loaded.module, _BatchDependent
    )
    extractor = fx.FeatureExtractor(
        model=_BatchDependent, weights=None, device="cpu", optimize=True
    )
    with caplog.at_level("WARNING", logger="featurex.models"):
        module = extractor.loaded.module
    assert isinstance(module, _BatchDependent)
    assert "the optimized model differs from eager" in caplog.text
    # The eager weights were freed before the check, and the model built again: the same one.
    images = [jpeg(60 + 10 * i, 50, i) for i in range(5)]
    eager = fx.FeatureExtractor(model=_BatchDependent, weights=None, device="cpu")
    assert_close(extractor.extract(images)[0], eager.extract(images)[0])


@pytest.mark.parametrize(
    ("address", "visible", "ordinal"),
    [
        ("0", None, 0),
        ("3", None, 3),
        ("3", "2,3", 1),
        ("GPU-9f", "GPU-1a,GPU-9f", 1),
        ("1", "5,6", 1),
    ],
)
def test_gpu_ordinal_respects_cuda_visible_devices(
    address: str, visible: str | None, ordinal: int
) -> None:
    assert gpu_ordinal(address, visible) == ordinal


def test_gpu_ordinal_refuses_an_address_it_cannot_see() -> None:
    with pytest.raises(
        ValueError, match=r"GPU address '7' .* not among CUDA_VISIBLE_DEVICES='2,3'"
    ):
        gpu_ordinal("7", "2,3")


def test_task_device_uses_the_task_gpu_and_lets_explicit_devices_win() -> None:
    assert task_device("auto", ["2"], partition_id=5, visible_devices="1,2") == "cuda:1"
    assert task_device("cuda", ["0"], partition_id=5, visible_devices=None) == "cuda:0"
    assert task_device("cpu", ["0"], partition_id=5, visible_devices=None) is None
    assert task_device("cuda:1", ["0"], partition_id=5, visible_devices=None) is None
    if not torch.cuda.is_available():  # no GPU resource and no CUDA: the config's device
        assert task_device("auto", [], partition_id=5, visible_devices=None) is None


def test_fast_decode_features_stay_close_on_big_photos() -> None:
    from images import encode, photo

    big = [encode(photo(1800, 1200, seed=s), "JPEG", quality=92) for s in range(3)]
    small = [jpeg(320, 240, 8)]  # under 2x the resize size: no DCT scaling applies
    exact = fx.FeatureExtractor("resnet18", weights=None, device="cpu")
    fast = fx.FeatureExtractor("resnet18", weights=None, device="cpu", fast_decode=True)
    assert fast.loaded.resize_size == 256
    a, b = exact.extract(big + small)[0], fast.extract(big + small)[0]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99, cosine
    assert np.array_equal(a[3], b[3])
    assert not np.array_equal(a[0], b[0])  # the big ones really were decoded differently
