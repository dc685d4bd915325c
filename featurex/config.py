"""`ExtractorConfig`: the small frozen value that travels to the Spark workers.

Everything is validated here, on the driver, so a bad argument fails before any job runs.
The model family resolves the model and its weights into a `Source` (for a Hugging Face repo,
the commit every worker will load). The config carries a `key` computed once at creation;
the workers use it to find the model in their process cache, so two equal configs share
one loaded model.

Its fields are the one list of options: `image_features`, `FeatureExtractor`,
`ImageVectorizer` take them as keywords (`with_config_options`).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import hashlib
import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import models
from ._types import (
    DECODES,
    ON_ERRORS,
    PRECISIONS,
    Decode,
    ModelFactory,
    OnError,
    Precision,
    Transform,
)
from ._words import opt
from .errors import ConfigError
from .models.weights import folder_version, looks_like_path

__all__ = ["DEFAULT_MAX_PIXELS", "ExtractorConfig", "with_config_options"]

# Pillow's own default limit (about 89.5 megapixels, 0.25 GiB of RGB).
DEFAULT_MAX_PIXELS = 89_478_485
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_F = TypeVar("_F", bound=Callable[..., Any])


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


def _choices(valid: tuple[str, ...] | list[str]) -> str:
    return ", ".join(repr(v) for v in valid)


@dataclass(frozen=True)
class ExtractorConfig:
    """How to turn image bytes into features. Frozen, small and picklable."""

    # What to run: a torchvision model name, "hf:<repo or folder>[@revision]",
    # "timm:<name>[.tag]", "open_clip:<arch>", or a zero-arg factory returning an nn.Module.
    model: str | ModelFactory = "resnet50"
    # "DEFAULT" (the family's pretrained weights), a family's weights name or tag, a
    # checkpoint path (.pth/.pt/.safetensors), or None (random init).
    weights: str | None = "DEFAULT"
    seed: int = 0  # random init seed when weights is None
    transform: Transform | None = None  # PIL image -> CHW float tensor; None = from the weights
    # Where and how fast.
    batch_size: int | None = None  # None = the device's default
    device: str = "auto"
    precision: Precision = "fp32"  # "int8": quantized on the CPU (calibrated, checked)
    calibration: str | None = None  # int8: a folder of images to calibrate on; None = built in
    decode_threads: int | None = None  # None = the device's default
    # Where images are decoded and preprocessed: "gpu" decodes JPEGs with nvJPEG and
    # preprocesses on the model's GPU (other formats, and JPEGs nvJPEG refuses, with Pillow);
    # "auto" does so when the model runs on CUDA and torchvision can decode there.
    decode: Decode = "auto"
    # Path inputs: how many files are read at once, ahead of decoding (object storage answers
    # each read after tens of milliseconds). None = 16.
    read_ahead: int | None = None
    # What comes out.
    normalize: bool = False  # L2-normalized rows: cosine-ready, what vector stores expect
    # Bad input.
    on_error: OnError = "null"
    max_pixels: int = DEFAULT_MAX_PIXELS
    # JPEG draft decoding: libjpeg scales large photos down by 1/2, 1/4 or 1/8 while decoding,
    # never below the resize size: 8x faster decoding and resizing of a 12 Mpx photo, slightly
    # different pixels (cosine 0.99997 to exact decoding). None: on for int8, whose own
    # deviation from fp32 is larger (cosine 0.995), off otherwise (bf16's is smaller).
    fast_decode: bool | None = None
    # On the CPU, run a traced, frozen graph (batchnorm folded into the convolutions) with
    # oneDNN Graph fusions, compiled for the batch size. None: the family's default (torchvision
    # always; hf, timm and open_clip in fp32, where it was measured faster; never a factory,
    # since tracing fixes the Python control flow of its forward()); True or False to choose.
    optimize: bool | None = None
    # A pickled full-model checkpoint runs code from the file when loaded: refused unless True.
    trust_checkpoint: bool = False
    # Derived: the resolved model and weights, and what identifies the loaded model in a
    # worker's cache.
    source: models.Source = field(init=False, repr=False, compare=False)
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_positive("batch_size", self.batch_size, optional=True)
        _check_positive("decode_threads", self.decode_threads, optional=True)
        _check_positive("read_ahead", self.read_ahead, optional=True)
        _check_positive("max_pixels", self.max_pixels)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"{opt('seed')} must be an int, got {self.seed!r}")
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ConfigError(
                f"unknown {opt('device')} {self.device!r}: expected 'auto', 'cpu', 'cuda' or "
                f"'cuda:N'"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown {opt('precision')} {self.precision!r}: expected one of "
                f"{_choices(PRECISIONS)}"
            )
        if self.on_error not in ON_ERRORS:
            raise ConfigError(
                f"unknown {opt('on_error')} {self.on_error!r}: expected one of "
                f"{_choices(ON_ERRORS)}"
            )
        if self.decode not in DECODES:
            raise ConfigError(
                f"unknown {opt('decode')} {self.decode!r}: expected one of {_choices(DECODES)}"
            )
        if self.decode == "gpu" and self.device == "cpu":
            raise ConfigError(
                f"{opt('decode', 'gpu')} decodes on the GPU the model runs on, but "
                f"{opt('device', 'cpu')}: pass {opt('device', 'cuda')} (or 'auto' on GPU "
                f"workers), or {opt('decode', 'auto')} or 'cpu'"
            )
        for flag in ("fast_decode", "optimize", "trust_checkpoint", "normalize"):
            value = getattr(self, flag)
            if not isinstance(value, bool) and not (
                flag in ("optimize", "fast_decode") and value is None
            ):
                raise ConfigError(f"{opt(flag)} must be True or False, got {value!r}")
        if self.transform is not None and not callable(self.transform):
            raise ConfigError(
                f"{opt('transform')} must be callable or None, got {self.transform!r}"
            )
        self._check_gpu_transform()
        self._check_int8()
        if self.fast_decode is None:
            object.__setattr__(self, "fast_decode", self.precision == "int8")

        source = models.resolve(self.model, _weights_arg(self.weights), self.trust_checkpoint)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "weights", source.weights)
        # Only what changes the loaded model belongs in the key; decoding limits, the error
        # policy and normalization are applied per call. The batch size is in it: a frozen
        # CPU graph is compiled for one.
        name = source.model if source.family == "torchvision" else f"{source.family}:{source.model}"
        parts = (
            _fingerprint(name if isinstance(source.model, str) else self.model),
            source.identity,
            str(self.seed),
            _fingerprint(self.transform),
            self.device,
            self.precision,
            *([_calibration_version(self.calibration)] if self.precision == "int8" else []),
            f"optimize={self.optimize}",
            f"trust={self.trust_checkpoint}",
            f"batch={self.batch_size}",
        )
        object.__setattr__(self, "key", "|".join(parts))
        models.check_precision(self.precision, self.device)

    def _check_gpu_transform(self) -> None:
        """decode="gpu" runs the preprocessing on tensors: a transform featurex cannot read as
        data (`decode.describe`) would run on the CPU, so "gpu" would not hold."""
        if self.decode != "gpu" or self.transform is None:
            return
        from .decode.preprocess import describe

        if describe(self.transform) is None:
            raise ConfigError(
                f"{opt('decode', 'gpu')} needs preprocessing featurex can run on tensors, but "
                f"{opt('transform')} {self.transform!r} is not a Resize/CenterCrop/ToTensor/"
                f"Normalize Compose or a torchvision preset: pass {opt('decode', 'auto')} or "
                f"'cpu' (it then runs on the CPU), or give it a `preprocessing` attribute "
                f"(featurex.decode.Preprocessing)"
            )

    def _check_int8(self) -> None:
        if self.precision == "int8" and self.device.startswith("cuda"):
            raise ConfigError(
                f"{opt('precision', 'int8')} runs on the CPU (x86 quantized kernels), not on "
                f"{opt('device', self.device)}: use {opt('device', 'cpu')}, or "
                f"{opt('precision', 'fp16')} or 'bf16' on a GPU (with {opt('device', 'auto')}, "
                f"a GPU worker runs int8 as fp16)"
            )
        if self.calibration is None:
            return
        if self.precision != "int8":
            raise ConfigError(
                f"{opt('calibration', self.calibration)} is used only with "
                f"{opt('precision', 'int8')}, got {opt('precision', self.precision)}"
            )
        if not isinstance(self.calibration, str | os.PathLike):
            raise ConfigError(
                f"{opt('calibration')} must be a folder of images, got {self.calibration!r}"
            )
        try:
            folder = models.quantize.check_folder(os.fspath(self.calibration))
        except (NotADirectoryError, FileNotFoundError) as exc:
            raise ConfigError(
                f"{opt('calibration')} folder {os.fspath(self.calibration)!r} "
                f"{'does not exist' if isinstance(exc, NotADirectoryError) else 'holds no images'}"
                f": pass a folder of representative images "
                f"({', '.join(models.quantize.IMAGE_SUFFIXES)}), or "
                f"{opt('calibration', None)} for featurex's own"
            ) from exc
        object.__setattr__(self, "calibration", folder)

    @classmethod
    def from_options(
        cls, model: str | ModelFactory, weights: str | None, options: Mapping[str, Any]
    ) -> ExtractorConfig:
        """The config for keyword options, refusing an unknown one with the closest names."""
        unknown = [k for k in options if k not in OPTIONS]
        if unknown:
            # model and weights are arguments of their own, and so the likeliest typos.
            known = ("model", "weights", *OPTIONS)
            close = difflib.get_close_matches(unknown[0], known, n=2)
            hint = f": did you mean {_choices(close)}?" if close else ""
            raise ConfigError(f"unknown option {unknown[0]!r}{hint} (options: {', '.join(known)})")
        return cls(model=model, weights=weights, **options)

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint path, when weights is one."""
        w = self.weights
        return w if w is not None and looks_like_path(w) else None

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
            "calibration": self.calibration,
            "normalize": self.normalize,
            "on_error": self.on_error,
            "fast_decode": self.fast_decode,
            "decode": self.decode,
            "optimize": self.optimize,
        }


# The options a user passes by keyword: every field but the model, its weights and the
# derived ones.
OPTIONS = tuple(
    f.name
    for f in dataclasses.fields(ExtractorConfig)
    if f.init and f.name not in ("model", "weights")
)


def with_config_options(fn: _F) -> _F:
    """Show `ExtractorConfig`'s options in place of `fn`'s `**options` in its signature
    (`help()`, IDEs), so the list is written once."""
    signature = inspect.signature(fn)
    fields = {f.name: f for f in dataclasses.fields(ExtractorConfig)}
    params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    params += [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=fields[name].default,
            annotation=fields[name].type,
        )
        for name in OPTIONS
        if name not in signature.parameters
    ]
    fn.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return fn


def _calibration_version(folder: str | None) -> str:
    """int8's calibration in the key: a folder changed in place calibrates a new model."""
    return "calibration=builtin" if folder is None else f"calibration={folder_version(folder)}"


def _weights_arg(weights: object) -> str | None:
    """Weights as the families take them: a torchvision enum member as its name, "none" as
    None, a path made absolute and checked."""
    if isinstance(weights, enum.Enum):  # a torchvision WeightsEnum member
        weights = f"{type(weights).__name__}.{weights.name}"
    if isinstance(weights, str) and weights.lower() == "none":
        return None  # the CLI and string-only APIs spell None this way
    if weights is not None and not isinstance(weights, str | os.PathLike):
        raise ConfigError(
            f"{opt('weights')} must be a torchvision weights name (or 'DEFAULT', or an "
            f"open_clip tag), a checkpoint path or None, got {weights!r}"
        )
    if isinstance(weights, os.PathLike) or (isinstance(weights, str) and looks_like_path(weights)):
        path = os.path.abspath(os.fspath(weights))
        if not os.path.isfile(path):
            raise ConfigError(
                f"checkpoint file not found: {path!r}. Pass an existing .pth/.pt/"
                f".safetensors state_dict, a weights name, or {opt('weights', None)}"
            )
        return path
    return weights


def _check_positive(name: str, value: object, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        default = f" (or {opt(name, None)} for the default)" if optional else ""
        raise ConfigError(f"{opt(name)} must be a positive int, got {value!r}{default}")
