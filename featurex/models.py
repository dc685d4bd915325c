"""Model registry, weights resolution and preprocessing. Pure PyTorch, no Spark.

`load_model(config)` builds what a worker caches: the feature trunk (the model with its
final classifier replaced by Identity), the preprocessing that belongs to the weights, the
feature size and how to run it (device, autocast dtype, memory format).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, cast
from urllib.parse import urlparse

import torch
from torch import nn

from .config import ExtractorConfig, Transform
from .errors import CheckpointError, WeightsUnavailableError, first_line

log = logging.getLogger(__name__)
_SEED_LOCK = threading.Lock()

# Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize(ImageNet), for weights that do not
# bring their own preprocessing (a checkpoint path, random init, a factory).
DEFAULT_RESIZE = 256
DEFAULT_CROP = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_BATCH_SIZE = {"cpu": 8, "cuda": 64}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, as cached per worker process."""

    module: nn.Module
    transform: Transform
    dim: int
    device: torch.device
    autocast_dtype: torch.dtype | None


def default_transform() -> Transform:
    from torchvision.transforms._presets import ImageClassification

    preset = ImageClassification(
        crop_size=DEFAULT_CROP,
        resize_size=DEFAULT_RESIZE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    return cast(Transform, preset)


def resolve_weights(model: str, weights: str) -> Any:
    """The torchvision weights enum member for a validated name such as "DEFAULT"."""
    import torchvision.models

    return torchvision.models.get_model_weights(model)[weights]


def weights_file(weights: Any) -> str:
    """Where torch.hub keeps (or would keep) the file of torchvision weights."""
    name = os.path.basename(urlparse(weights.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", name)


def ensure_weights(model: str, weights: Any) -> None:
    """Download torchvision weights into the torch.hub cache, or say in one line what to do."""
    path = weights_file(weights)
    if os.path.isfile(path):
        return
    digest = re.search(r"-([a-f0-9]+)\.", os.path.basename(path))  # torch.hub's convention
    log.info("downloading %s to %s", weights.url, path)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.hub.download_url_to_file(
            weights.url, path, hash_prefix=digest.group(1) if digest else None, progress=False
        )
    except Exception as exc:
        raise WeightsUnavailableError(
            f"cannot download {weights} for {model} from {weights.url} ({first_line(exc)}). "
            f"Offline? Pass weights='/path/to/checkpoint.pth' (a local state_dict; "
            f"CLI: --weights PATH) or weights=None for random init (CLI: --weights none)"
        ) from exc


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={spec!r} but CUDA is not available in this process")
    return device


def default_batch_size(device: torch.device) -> int:
    return DEFAULT_BATCH_SIZE.get(device.type, DEFAULT_BATCH_SIZE["cpu"])


def default_decode_threads(device: torch.device) -> int:
    # On the CPU, inference dominates: one thread decodes ahead of the forward pass. A GPU
    # is starved by CPU decoding, so feed it with several.
    if device.type == "cuda":
        return max(2, min(8, os.cpu_count() or 2))
    return 1


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision on a device, or None for plain fp32."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            _warn_once(f"bf16 is not supported on {device}; running fp32")
            return None
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "bf16" and _cpu_has_bf16():
        return torch.bfloat16
    _warn_once(f"{precision} is not supported on this CPU; running fp32")
    return None


@lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    return bool(
        torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


@cache
def _warn_once(message: str) -> None:
    log.warning(message)


def _strip_classifier(module: nn.Module) -> tuple[str, int]:
    """Replace the last nn.Linear (the classifier) by Identity: return its name and in size."""
    linears = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear classifier whose input could be the features")
    name, layer = linears[-1]
    parent_name, _, attr = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, attr, nn.Identity())
    return name, layer.in_features


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for one model build, then restore the caller's RNG state.

    Locked: two threads building models at once would otherwise interleave their draws.
    """
    with _SEED_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _build_torchvision(config: ExtractorConfig) -> tuple[nn.Module, Transform, int]:
    import torchvision.models

    name = config.model
    assert isinstance(name, str)
    builder = torchvision.models.get_model_builder(name)
    weights = config.weights
    if weights is not None and config.checkpoint is None:
        enum = resolve_weights(name, weights)
        ensure_weights(name, enum)
        module = builder(weights=enum)
        transform: Transform = enum.transforms()
        _, dim = _strip_classifier(module)
        return module, config.transform or transform, dim
    with _seeded(config.seed):
        module = builder(weights=None)
    head, dim = _strip_classifier(module)
    if config.checkpoint is not None:
        load_checkpoint_into(module, config.checkpoint, ignore_prefix=head + ".")
    return module, config.transform or default_transform(), dim


def _build_factory(config: ExtractorConfig) -> tuple[nn.Module, Transform, int]:
    assert callable(config.model)
    with _seeded(config.seed):
        module = config.model()
    if not isinstance(module, nn.Module):
        raise TypeError(f"model factory returned {type(module).__name__}, expected nn.Module")
    if config.checkpoint is not None:
        load_checkpoint_into(module, config.checkpoint)
    transform = config.transform or default_transform()
    return module, transform, _probe_dim(module.eval(), transform)


def _probe_dim(module: nn.Module, transform: Transform) -> int:
    """A factory's feature size: one forward pass on a blank image, at load time."""
    from PIL import Image

    sample = transform(Image.new("RGB", (256, 256)))
    with torch.inference_mode():
        out = module(sample.unsqueeze(0))
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model factory's module returned {type(out).__name__}, not a Tensor")
    return int(out[0].numel())


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a state_dict without running any pickled code from the file."""
    try:
        if path.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            obj: Any = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path!r} as a state_dict ({first_line(exc)}). featurex loads "
            f"tensors only (torch.save(model.state_dict(), path) or .safetensors), never "
            f"pickled objects"
        ) from exc
    for wrapper in ("state_dict", "model"):  # common training-loop layouts
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path!r} is not a state_dict of tensors")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_checkpoint_into(module: nn.Module, path: str, ignore_prefix: str | None = None) -> None:
    """Load a state_dict strictly, except for keys of the removed classifier head."""
    state = read_state_dict(path)
    if ignore_prefix:  # the head is replaced by Identity, so any class count fits
        state = {k: v for k, v in state.items() if not k.startswith(ignore_prefix)}
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = str(exc).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path!r} does not fit the model: {' '.join(detail[1:3]).strip()}"
        ) from exc
    problems = [
        f"{kind} keys {_few(keys)}"
        for kind, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
        if keys
    ]
    if problems:
        raise CheckpointError(f"checkpoint {path!r} does not fit the model: {', '.join(problems)}")


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return f"[{shown}{more}]"


def load_model(config: ExtractorConfig) -> LoadedModel:
    """Build the model described by a config. Slow; callers go through the cache."""
    device = resolve_device(config.device)
    build = _build_torchvision if isinstance(config.model, str) else _build_factory
    module, transform, dim = build(config)
    dtype = autocast_dtype(config.precision, device)
    # channels_last lets oneDNN and cuDNN pick their fastest convolution kernels.
    module = module.eval().to(device).to(memory_format=torch.channels_last)
    for p in module.parameters():
        p.requires_grad_(False)
    log.info(
        "featurex loaded %s on %s (dim=%s, autocast=%s)", config.describe(), device, dim, dtype
    )
    return LoadedModel(module, transform, dim, device, dtype)
