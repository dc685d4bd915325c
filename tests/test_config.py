"""Bad arguments fail on the driver, at call time, naming the value and the valid choices."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from models_for_tests import tiny_cnn

import featurex as fx
from featurex.config import ExtractorConfig
from featurex.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "resnet5O"}, r"unknown model 'resnet5O'.*did you mean 'resnet50'"),
        ({"model": "squeezenet1_0"}, r"unknown model 'squeezenet1_0'"),
        ({"model": 42}, r"model must be a torchvision model name or a zero-argument callable"),
        ({"weights": "IMAGENET1K_V9"}, r"unknown weights 'IMAGENET1K_V9' for resnet50.*'IMAGENET1K_V2'"),
        ({"model": "tf:resnet50"}, r"^unknown model family 'tf:' in model='tf:resnet50': did you mean 'resnet50'\? \(the families are 'hf:', 'timm:' and 'open_clip:'; a plain name is torchvision's\)$"),
        ({"model": "open-clip:ViT-B-32"}, r"unknown model family 'open-clip:' .*did you mean 'open_clip:ViT-B-32'\?"),
        # In Python's words: keywords (tests/test_cli.py and test_ml.py: the same in theirs).
        ({"weights": "/no/such/model.pth"}, r"^checkpoint file not found: '/no/such/model.pth'\. Pass an existing \.pth/\.pt/\.safetensors state_dict, a weights name, or weights=None$"),
        ({"weights": 3}, r"weights must be a torchvision weights name"),
        ({"batch_size": 0}, r"^batch_size must be a positive int, got 0 \(or batch_size=None for the default\)$"),
        ({"batch_size": -4}, r"batch_size must be a positive int.*got -4"),
        ({"batch_size": 2.5}, r"batch_size must be a positive int.*got 2.5"),
        ({"batch_size": True}, r"batch_size must be a positive int.*got True"),
        ({"device": "gpu"}, r"unknown device 'gpu': expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ({"precision": "int4"}, r"unknown precision 'int4': expected one of 'fp32', 'bf16', 'fp16', 'int8'"),
        ({"on_error": "skip"}, r"unknown on_error 'skip': expected one of 'null', 'raise'"),
        ({"max_pixels": 0}, r"max_pixels must be a positive int"),
        ({"decode_threads": 0}, r"decode_threads must be a positive int"),
        ({"read_ahead": 0}, r"read_ahead must be a positive int"),
        ({"decode": "nvjpeg"}, r"unknown decode 'nvjpeg': expected one of 'auto', 'cpu', 'gpu'"),
        ({"decode": "gpu", "device": "cpu"}, r"decode='gpu' decodes on the GPU the model runs on, but device='cpu'.*decode='auto' or 'cpu'"),
    ],
)  # fmt: skip
def test_bad_arguments_fail_at_call_time(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fx.image_features("content", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        fx.FeatureExtractor(**kwargs)  # type: ignore[arg-type]


def test_with_errors_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="with_errors must be True or False, got 'yes'"):
        fx.image_features("content", weights=None, with_errors="yes")  # type: ignore[arg-type]


def test_config_errors_are_value_errors() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, fx.FeatureXError)


def test_weights_names_are_normalised() -> None:
    assert ExtractorConfig(weights="none").weights is None
    assert ExtractorConfig(weights="ResNet50_Weights.IMAGENET1K_V2").weights == "IMAGENET1K_V2"
    assert ExtractorConfig(model="resnet18", weights="IMAGENET1K_V1").weights == "IMAGENET1K_V1"


def test_weights_enum_members_and_foreign_enums() -> None:
    import torchvision

    member = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    assert ExtractorConfig(model="resnet50", weights=member).weights == "IMAGENET1K_V1"  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"unknown weights 'ResNet18_Weights\.IMAGENET1K_V1' for resnet50"
    ):
        ExtractorConfig(model="resnet50", weights="ResNet18_Weights.IMAGENET1K_V1")


def test_redefined_factory_gets_a_new_key() -> None:
    # A notebook cell run twice with a changed body must not reuse the old model.
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec("import torch\ndef make():\n    return torch.nn.Linear(3, 4)", namespace)
    first = ExtractorConfig(model=namespace["make"], weights=None).key  # type: ignore[arg-type]
    exec("import torch\ndef make():\n    return torch.nn.Conv2d(3, 4, 1)", namespace)
    second = ExtractorConfig(model=namespace["make"], weights=None).key  # type: ignore[arg-type]
    assert first != second


def test_rewritten_checkpoint_gets_a_new_key(tmp_path: Path) -> None:
    import os

    path = tmp_path / "m.pth"
    torch.save(tiny_cnn().state_dict(), path)
    first = ExtractorConfig(model=tiny_cnn, weights=str(path)).key
    torch.save(tiny_cnn().state_dict(), path)
    os.utime(path, ns=(1, 1))
    assert ExtractorConfig(model=tiny_cnn, weights=str(path)).key != first


def test_checkpoint_path_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.save(tiny_cnn().state_dict(), tmp_path / "m.pth")
    monkeypatch.chdir(tmp_path)
    config = ExtractorConfig(model=tiny_cnn, weights="m.pth")
    assert config.weights == str(tmp_path / "m.pth")
    assert config.checkpoint == str(tmp_path / "m.pth")


def test_factory_rejects_a_torchvision_weights_name() -> None:
    with pytest.raises(ConfigError, match="model is a factory"):
        ExtractorConfig(model=torch.nn.Identity, weights="IMAGENET1K_V1")


def test_equal_configs_share_a_key_and_model_changes_do_not() -> None:
    a = ExtractorConfig(model="resnet18", weights=None)
    assert a.key == ExtractorConfig(model="resnet18", weights=None).key
    # Per-call settings do not need another model.
    assert a.key == ExtractorConfig(model="resnet18", weights=None, on_error="raise").key
    assert a.key == ExtractorConfig(model="resnet18", weights=None, max_pixels=10**6).key
    for other in (
        # A frozen CPU graph is compiled for its batch size.
        ExtractorConfig(model="resnet18", weights=None, batch_size=3),
        ExtractorConfig(model="resnet34", weights=None),
        ExtractorConfig(model="resnet18", weights=None, seed=1),
        ExtractorConfig(model="resnet18", weights=None, precision="bf16"),
        ExtractorConfig(model="resnet18", weights="DEFAULT"),
    ):
        assert other.key != a.key


def test_a_precision_this_cpu_cannot_run_is_reported_on_the_driver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from featurex.models.runtime import warn_once

    warn_once.cache_clear()
    with caplog.at_level("WARNING", logger="featurex.models"):
        ExtractorConfig(model="resnet18", weights=None, device="cpu", precision="fp16")
    assert "fp16 is not supported on this CPU; running fp32" in caplog.text
