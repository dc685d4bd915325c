"""`ExtractorConfig`: the small frozen value that travels to the Spark workers.

Everything is validated here, on the driver, so a bad argument fails before any job runs.
The config carries a `key` computed once at creation; the workers use it to find the model
in their process cache, so two equal configs share one loaded model.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, get_args

from .errors import ConfigError

if TYPE_CHECKING:
    import torch
    from PIL import Image

Precision = Literal["fp32", "bf16", "fp16"]
OnError = Literal["null", "raise"]
ModelFactory = Callable[[], "torch.nn.Module"]
Transform = Callable[["Image.Image"], "torch.Tensor"]

PRECISIONS: tuple[str, ...] = get_args(Precision)
ON_ERRORS: tuple[str, ...] = get_args(OnError)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
# Pillow's own default limit (about 89.5 megapixels, 0.25 GiB of RGB).
DEFAULT_MAX_PIXELS = 89_478_485
# torchvision classifiers without a final nn.Linear: "input of the classifier" is not clean.
_NO_LINEAR_HEAD = frozenset({"squeezenet1_0", "squeezenet1_1"})
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@lru_cache(maxsize=1)
def supported_models() -> tuple[str, ...]:
    """torchvision classification models whose features are the classifier's input."""
    import torchvision.models

    names = torchvision.models.list_models(module=torchvision.models)
    return tuple(n for n in names if n not in _NO_LINEAR_HEAD)


def weights_enum(model: str) -> Any:
    """A model's torchvision weights enum, e.g. ResNet50_Weights."""
    import torchvision.models

    return torchvision.models.get_model_weights(model)


def _fingerprint(obj: object) -> str:
    """A stable identity for a user callable, computed on the driver.

    Functions defined in a notebook are shipped by value and come back as new objects in
    every task, so identity cannot key the worker cache. cloudpickle serializes such a
    function by value (its code, defaults and closure), so redefining it changes the key.
    """
    if obj is None or isinstance(obj, str):
        return repr(obj)
    import cloudpickle

    try:
        return hashlib.sha256(cloudpickle.dumps(obj)).hexdigest()
    except Exception:  # not picklable: usable in this process only, never shipped
        return f"id:{id(obj)}"


def _file_version(path: str) -> str:
    """Path, size and mtime: a checkpoint rewritten in place gets a new cache key."""
    stat = os.stat(path)
    return f"{path}@{stat.st_size}:{stat.st_mtime_ns}"


def _choices(valid: tuple[str, ...] | list[str]) -> str:
    return ", ".join(repr(v) for v in valid)


@dataclass(frozen=True)
class ExtractorConfig:
    """How to turn image bytes into features. Frozen, small and picklable."""

    # What to run: a torchvision model name or a zero-arg factory returning an nn.Module.
    model: str | ModelFactory = "resnet50"
    # torchvision weights name, a checkpoint path (.pth/.pt/.safetensors), or None (random).
    weights: str | None = "DEFAULT"
    seed: int = 0  # random init seed when weights is None
    transform: Transform | None = None  # PIL image -> CHW float tensor; None = from the weights
    # Where and how fast.
    batch_size: int | None = None  # None = the device's default
    device: str = "auto"
    precision: Precision = "fp32"
    decode_threads: int | None = None  # None = the device's default
    # Bad input.
    on_error: OnError = "null"
    max_pixels: int = DEFAULT_MAX_PIXELS
    # JPEG draft decoding: libjpeg scales large photos down by 1/2, 1/4 or 1/8 while decoding,
    # never below the resize size. Faster on big photos, slightly different pixels.
    fast_decode: bool = False
    # On the CPU, run a traced, frozen graph (batchnorm folded into the convolutions) with
    # oneDNN Graph fusions, compiled for the batch size. None: for torchvision models only,
    # since tracing fixes the Python control flow of a user's forward(); True or False to
    # choose.
    optimize: bool | None = None
    # A pickled full-model checkpoint runs code from the file when loaded: refused unless True.
    trust_checkpoint: bool = False
    # Derived: identifies the loaded model in a worker's cache.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_model_and_weights()
        _check_positive("batch_size", self.batch_size, optional=True)
        _check_positive("decode_threads", self.decode_threads, optional=True)
        _check_positive("max_pixels", self.max_pixels)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an int, got {self.seed!r}")
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ConfigError(
                f"unknown device {self.device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}: expected one of {_choices(PRECISIONS)}"
            )
        if self.on_error not in ON_ERRORS:
            raise ConfigError(
                f"unknown on_error {self.on_error!r}: expected one of {_choices(ON_ERRORS)}"
            )
        for flag in ("fast_decode", "optimize", "trust_checkpoint"):
            value = getattr(self, flag)
            if not isinstance(value, bool) and not (flag == "optimize" and value is None):
                raise ConfigError(f"{flag} must be True or False, got {value!r}")
        if self.transform is not None and not callable(self.transform):
            raise ConfigError(f"transform must be callable or None, got {self.transform!r}")
        # Only what changes the loaded model belongs in the key; decoding limits and the
        # error policy are applied per call. The batch size is in it: a frozen CPU graph is
        # compiled for one.
        parts = (
            _fingerprint(self.model),
            _file_version(self.checkpoint) if self.checkpoint else repr(self.weights),
            str(self.seed),
            _fingerprint(self.transform),
            self.device,
            self.precision,
            f"optimize={self.optimize}",
            f"trust={self.trust_checkpoint}",
            f"batch={self.batch_size}",
        )
        object.__setattr__(self, "key", "|".join(parts))
        from .models import check_checkpoint, check_precision  # imports torch: not at import

        check_precision(self.precision, self.device)
        if self.checkpoint is not None:
            check_checkpoint(self)

    def _check_model_and_weights(self) -> None:
        weights: object = self.weights
        if isinstance(weights, enum.Enum):  # a torchvision WeightsEnum member
            weights = f"{type(weights).__name__}.{weights.name}"
        if isinstance(weights, str) and weights.lower() == "none":
            weights = None  # the CLI and string-only APIs spell None this way
        if weights is not None and not isinstance(weights, str | os.PathLike):
            raise ConfigError(
                f"weights must be a torchvision weights name, a checkpoint path or None, "
                f"got {weights!r}"
            )
        if isinstance(weights, os.PathLike) or (
            isinstance(weights, str) and _looks_like_path(weights)
        ):
            path = os.path.abspath(os.fspath(weights))
            if not os.path.isfile(path):
                raise ConfigError(
                    f"checkpoint file not found: {path!r}. Pass an existing .pth/.pt/"
                    f".safetensors state_dict, a torchvision weights name, or weights=None"
                )
            weights = path
        object.__setattr__(self, "weights", weights)

        if callable(self.model):
            if weights is not None and weights != "DEFAULT" and not _looks_like_path(weights):
                raise ConfigError(
                    f"weights={weights!r} is a torchvision weights name, but model is a "
                    f"factory: pass a checkpoint path, or None/'DEFAULT' to keep the "
                    f"factory's own weights"
                )
            return
        if not isinstance(self.model, str):
            raise ConfigError(
                f"model must be a torchvision model name or a zero-argument callable "
                f"returning an nn.Module, got {self.model!r}"
            )
        valid = supported_models()
        if self.model not in valid:
            close = difflib.get_close_matches(self.model, valid, n=3)
            hint = f"did you mean {_choices(close)}? " if close else ""
            raise ConfigError(
                f"unknown model {self.model!r}: {hint}expected a torchvision classifier "
                f"such as 'resnet18', 'resnet50' or 'efficientnet_b0' "
                f"(all {len(valid)}: featurex.config.supported_models()), or a factory"
            )
        if isinstance(weights, str) and not _looks_like_path(weights):
            enum_type = weights_enum(self.model)
            names = ("DEFAULT", *(n for n in enum_type.__members__ if n != "DEFAULT"))
            # Accept "ResNet50_Weights.IMAGENET1K_V2", but only with this model's enum.
            prefix, _, short = weights.rpartition(".")
            if short not in names or prefix not in ("", enum_type.__name__):
                raise ConfigError(
                    f"unknown weights {weights!r} for {self.model}: expected one of "
                    f"{_choices(names)}, a checkpoint path ({', '.join(CHECKPOINT_SUFFIXES)}), "
                    f"or None for random init"
                )
            object.__setattr__(self, "weights", short)

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint path, when weights is one."""
        w = self.weights
        return w if w is not None and _looks_like_path(w) else None

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary, for logs and the CLI."""
        model = (
            self.model
            if isinstance(self.model, str)
            else getattr(self.model, "__qualname__", repr(self.model))
        )
        return {
            "model": model,
            "weights": self.weights,
            "batch_size": self.batch_size,
            "device": self.device,
            "precision": self.precision,
            "on_error": self.on_error,
            "fast_decode": self.fast_decode,
            "optimize": self.optimize,
        }


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(CHECKPOINT_SUFFIXES)


def _check_positive(name: str, value: object, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        default = " (or None for the default)" if optional else ""
        raise ConfigError(f"{name} must be a positive int{default}, got {value!r}")
