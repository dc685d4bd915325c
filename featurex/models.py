"""Model registry, weights resolution and preprocessing. Pure PyTorch, no Spark.

`load_model(config)` builds what a worker caches: the feature trunk (the model with its
final classifier replaced by Identity), the preprocessing that belongs to the weights, the
feature size and how to run it (device, autocast dtype, memory format).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, TypeVar, cast
from urllib.parse import urlparse

import torch
from torch import nn

from .config import ExtractorConfig, Transform
from .decode import resize_target
from .errors import CheckpointError, WeightsUnavailableError, first_line

log = logging.getLogger(__name__)
_SEED_LOCK = threading.Lock()
_V = TypeVar("_V")

# Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize(ImageNet), for weights that do not
# bring their own preprocessing (a checkpoint path, random init, a factory).
DEFAULT_RESIZE = 256
DEFAULT_CROP = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_BATCH_SIZE = {"cpu": 4, "cuda": 64}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, as cached per worker process."""

    module: nn.Module
    transform: Transform
    dim: int
    device: torch.device
    autocast_dtype: torch.dtype | None
    # The short side the transform first resizes to, when known (`decode.resize_target`).
    resize_size: int | None = None
    # A frozen graph's oneDNN kernels are compiled for one batch size: run it at that size.
    graph_batch: int | None = None


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


def gpu_ordinal(address: str, visible_devices: str | None) -> int:
    """This process's CUDA ordinal for a GPU address from Spark's task resources.

    Spark's discovery script reports host GPU ids. When the cluster manager also isolates
    GPUs with CUDA_VISIBLE_DEVICES (YARN, Kubernetes), CUDA renumbers the visible ones from 0,
    so the address must be looked up in that list.
    """
    visible = [v.strip() for v in (visible_devices or "").split(",") if v.strip()]
    if address in visible:
        return visible.index(address)
    if address.isdigit() and (not visible or int(address) < len(visible)):
        return int(address)
    raise ValueError(
        f"GPU address {address!r} from Spark's task resources is not among "
        f"CUDA_VISIBLE_DEVICES={visible_devices!r}"
    )


def task_device(
    spec: str, gpu_addresses: list[str], partition_id: int, visible_devices: str | None
) -> str | None:
    """The device for one Spark task, or None to use `spec` as it is.

    An explicit "cpu" or "cuda:N" wins. Otherwise the GPU Spark assigned to the task is used;
    without GPU scheduling, tasks spread over the visible GPUs by partition, never all on GPU 0.
    """
    if spec not in ("auto", "cuda"):
        return None
    if gpu_addresses:
        return f"cuda:{gpu_ordinal(gpu_addresses[0], visible_devices)}"
    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    return f"cuda:{partition_id % count}" if count > 1 else None


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


def check_precision(precision: str, device: str) -> None:
    """On the driver: warn now, not only in worker logs, when a precision will run as fp32.

    The driver's CPU stands in for the executors'; the workers check their own as well.
    """
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        autocast_dtype(precision, torch.device("cpu"))


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


def _build(config: ExtractorConfig) -> tuple[nn.Module, Transform]:
    """The feature trunk (classifier removed) and its preprocessing, on the CPU."""
    state: dict[str, torch.Tensor] | None = None
    if config.checkpoint is not None:
        loaded = read_checkpoint(config.checkpoint, config.trust_checkpoint)
        if isinstance(loaded, nn.Module):  # a trusted full model brings its architecture
            if any(isinstance(m, nn.Linear) for m in loaded.modules()):
                _strip_classifier(loaded)
            return loaded, config.transform or default_transform()
        state = loaded
    if callable(config.model):  # a factory returns the trunk itself
        with _seeded(config.seed):
            module = config.model()
        if not isinstance(module, nn.Module):
            raise TypeError(f"model factory returned {type(module).__name__}, expected nn.Module")
        if state is not None:
            _load_state(module, state, config.checkpoint, None)
        return module, config.transform or default_transform()

    import torchvision.models

    builder = torchvision.models.get_model_builder(config.model)
    if config.weights is not None and state is None:
        enum = resolve_weights(config.model, config.weights)
        ensure_weights(config.model, enum)
        module = builder(weights=enum)
        _strip_classifier(module)
        return module, config.transform or enum.transforms()
    with _seeded(config.seed):
        module = builder(weights=None)
    head, _ = _strip_classifier(module)
    if state is not None:
        _load_state(module, state, config.checkpoint, head + ".")
    return module, config.transform or default_transform()


def _example_batch(transform: Transform) -> torch.Tensor:
    """Two preprocessed noise images: the input for tracing, checking and the feature size."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (288, 320, 3), dtype=np.uint8)
    images = [Image.fromarray(pixels), Image.fromarray(pixels[::-1].copy())]
    tensors = [transform(image) for image in images]
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.ndim != 3 or not t.is_floating_point():
            got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"transform must return a float CHW image tensor, got {got}")
    return torch.stack(tensors).contiguous(memory_format=torch.channels_last)


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def forward(module: nn.Module, batch: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """The model's output for a batch on its device, as (rows, D) float32."""
    with torch.inference_mode(), autocast(batch.device, dtype):
        out = module(batch)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, expected a Tensor")
    return out.reshape(batch.shape[0], -1).float()


_FUSION_LOCK = threading.Lock()


@contextlib.contextmanager
def _onednn_fusion() -> Iterator[None]:
    """oneDNN Graph fusion for the TorchScript graphs first run inside, and only those.

    The graph executor fuses a graph during its first runs, so a graph warmed up inside keeps
    its fused kernels for that input shape; the flag is process-wide, hence the lock.
    """
    if not hasattr(torch._C, "_jit_llga_enabled"):  # a build without it (macOS, Windows)
        yield  # the graph is still frozen, batchnorm folded, only not fused
        return
    with _FUSION_LOCK:
        enabled = torch.jit.onednn_fusion_enabled()  # type: ignore[no-untyped-call]
        torch.jit.enable_onednn_fusion(True)
        try:
            yield
        finally:
            torch.jit.enable_onednn_fusion(enabled)


def _freeze(
    module: nn.Module, example: torch.Tensor, dtype: torch.dtype | None, batch_size: int
) -> nn.Module | None:
    """The model traced and frozen (batchnorm folded into the convolutions), or None with a
    warning where it cannot be traced.

    Traced at another batch size than the one it will run at (`_fuse`), so that a model
    whose forward depends on the batch size fails the check instead of passing by chance.
    Folded weights are the graph's own; others (a convolution without batchnorm, a Linear)
    stay shared with the eager module. torch.jit is deprecated in favour of torch.compile,
    which takes minutes per worker here.
    """
    trace_at = example[:1] if batch_size != 1 else example
    try:
        with warnings.catch_warnings(), torch.no_grad(), autocast(example.device, dtype):
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, trace_at, check_trace=False)  # type: ignore[no-untyped-call]
            return cast(nn.Module, torch.jit.freeze(traced))
    except Exception as exc:
        _warn_once(f"cannot optimize the model for inference ({first_line(exc)}); running eager")
        return None


def _fuse(
    graph: nn.Module, batch: torch.Tensor, want: torch.Tensor, dtype: torch.dtype | None
) -> bool:
    """Compile a frozen graph's oneDNN Graph fusions for `batch`'s shape; True if its output
    then matches eager's (`want`).

    ResNet-50 in Spark, `local[2]`, batch 4: 1.06x (fp32) and 1.18x (bf16) the speed of
    `torch.jit.optimize_for_inference` (measured), which is itself 1.2x eager. The kernels
    are compiled for the shape of the first runs, so the graph is run at that batch size only
    (`LoadedModel.graph_batch`): another shape would compile again and hold more memory
    (+100 MB for ResNet-50). The graph executor profiles the first run and fuses at the
    second: the run checked.
    """
    try:
        with warnings.catch_warnings(), _onednn_fusion():
            warnings.simplefilter("ignore")
            forward(graph, batch, dtype)
            got = forward(graph, batch, dtype)
        error = ((got - want).norm(dim=1) / want.norm(dim=1).clamp_min(1e-12)).max().item()
    except Exception as exc:
        _warn_once(f"cannot optimize the model for inference ({first_line(exc)}); running eager")
        return False
    if not error <= (1e-4 if dtype is None else 2e-2):
        _warn_once(f"the optimized model differs from eager by {error:.2g}; running eager")
        return False
    return True


def read_checkpoint(path: str, trust: bool = False) -> dict[str, torch.Tensor] | nn.Module:
    """A checkpoint's state_dict, read without running pickled code from the file.

    A pickled full model (torch.save(model)) is loaded only with `trust=True`, since
    unpickling it runs whatever code the file names.
    """
    try:
        if path.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            obj: Any = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(_unreadable(path, exc)) from exc
        if not trust:
            raise CheckpointError(
                f"checkpoint {path!r} holds pickled Python objects (for example a full model "
                f"saved with torch.save(model)), and loading it would run code from the file. "
                f"Save model.state_dict() (or .safetensors) instead, or pass "
                f"trust_checkpoint=True if you trust where the file came from"
            ) from exc
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(_unreadable(path, exc)) from exc
    if trust and isinstance(obj, nn.Module):
        return obj
    return _as_state_dict(obj, path)


def _unreadable(path: str, exc: BaseException) -> str:
    return (
        f"cannot read checkpoint {path!r} ({first_line(exc)}). featurex loads state_dicts: "
        f"torch.save(model.state_dict(), path) or .safetensors"
    )


def _as_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "model"):  # common training-loop layouts
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path!r} is not a state_dict of tensors")
    return _strip_ddp(obj)


def _strip_ddp(state: Mapping[str, _V]) -> dict[str, _V]:
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _checkpoint_shapes(path: str, trust: bool) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape, cheaply (a safetensors header, or a memory-mapped torch.load).

    None for a trusted full model, which brings its own architecture.
    """
    obj: Any
    try:
        if path.lower().endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                return _strip_ddp({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError):
        # Legacy (non-zip) files cannot be memory-mapped; pickled objects are refused or,
        # when trusted, loaded: read_checkpoint says which, with the right message.
        obj = read_checkpoint(path, trust)
    except Exception as exc:
        raise CheckpointError(_unreadable(path, exc)) from exc
    if isinstance(obj, nn.Module):
        return None
    return {k: tuple(v.shape) for k, v in _as_state_dict(obj, path).items()}


def check_checkpoint(config: ExtractorConfig) -> None:
    """On the driver: a checkpoint that cannot fit the model fails before any job runs.

    The model is built on the meta device (no memory, no init), so this costs milliseconds.
    """
    path = config.checkpoint
    assert path is not None
    shapes = _checkpoint_shapes(path, config.trust_checkpoint)
    if shapes is None:
        return
    try:
        with torch.device("meta"):
            if isinstance(config.model, str):
                import torchvision.models

                module = torchvision.models.get_model_builder(config.model)(weights=None)
                head: str | None = _strip_classifier(module)[0] + "."
            else:
                module, head = config.model(), None
    except Exception as exc:  # a factory that cannot build on meta: the worker checks
        log.debug("skipping the driver-side checkpoint check: %s", exc)
        return
    _check_fit(module, shapes, path, head)


def _check_fit(
    module: nn.Module, shapes: Mapping[str, tuple[int, ...]], path: str, ignore_prefix: str | None
) -> None:
    """Every model key present with its shape, no extra keys (the removed head aside)."""
    if ignore_prefix:  # the head is replaced by Identity, so any class count fits
        shapes = {k: v for k, v in shapes.items() if not k.startswith(ignore_prefix)}
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [
        f"{k} {shapes[k]} vs {expected[k]}"
        for k in expected
        if k in shapes and shapes[k] != expected[k]
    ]
    problems = [
        f"{kind} {_few(keys)}"
        for kind, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (checkpoint vs model)", wrong),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(f"checkpoint {path!r} does not fit the model: {', '.join(problems)}")


def _load_state(
    module: nn.Module, state: dict[str, torch.Tensor], path: str | None, ignore_prefix: str | None
) -> None:
    """Load a state_dict strictly, except for keys of the removed classifier head."""
    assert path is not None
    _check_fit(module, {k: tuple(v.shape) for k, v in state.items()}, path, ignore_prefix)
    if ignore_prefix:
        state = {k: v for k, v in state.items() if not k.startswith(ignore_prefix)}
    module.load_state_dict(state)


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return f"[{shown}{more}]"


def load_model(config: ExtractorConfig, device: str | None = None) -> LoadedModel:
    """Build the model described by a config, on `device` (default: the config's).

    Slow; callers go through the cache.
    """
    target = resolve_device(device or config.device)
    module, transform = _build(config)
    dtype = autocast_dtype(config.precision, target)
    module = _for_inference(module, target)
    example = _example_batch(transform).to(target)
    optimize = config.optimize
    if optimize is None:  # torchvision's models trace faithfully; a user's forward may not
        optimize = isinstance(config.model, str) and not config.trust_checkpoint
    graph_batch = None
    if optimize and target.type == "cpu":
        # A frozen CPU graph is compiled for one batch size: checked at it, run at it.
        batch_size = config.batch_size or default_batch_size(target)
        batch = _repeat_to(example, batch_size)
        out = forward(module, batch, dtype)  # eager: the reference for the check
        graph = _freeze(module, example, dtype, batch_size)
        if graph is not None:
            # Free the eager weights before the fusion compiles its own copies: a lower load
            # peak (ResNet-50: -100 MB of worker RSS, measured). The collection is needed:
            # tracing leaves reference cycles that keep the module alive.
            del module
            gc.collect()
            fused = _fuse(graph, batch, out, dtype)
            if fused:
                module, graph_batch = graph, batch_size
            del graph
            if not fused:  # rare: build the eager model again
                gc.collect()
                module = _for_inference(_build(config)[0], target)
    else:
        out = forward(module, example, dtype)
    dim = int(out.shape[1])
    log.info(
        "featurex loaded %s on %s (dim=%s, autocast=%s)", config.describe(), target, dim, dtype
    )
    loaded = LoadedModel(
        module, transform, dim, target, dtype, resize_target(transform), graph_batch
    )
    del module
    _trim_heap()
    return loaded


def _repeat_to(example: torch.Tensor, rows: int) -> torch.Tensor:
    """A batch of `rows` images cycled from `example`."""
    return example[torch.arange(rows) % example.shape[0]].contiguous(
        memory_format=torch.channels_last
    )


def _for_inference(module: nn.Module, device: torch.device) -> nn.Module:
    # channels_last lets oneDNN and cuDNN pick their fastest convolution kernels.
    module = module.eval().to(device).to(memory_format=torch.channels_last)
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _trim_heap() -> None:
    """Give the heap freed by the build back to the OS.

    Building, checking and freezing leave freed memory (the eager weights, activations)
    resident in glibc's heap: about 100 MB of worker RSS for ResNet-50, measured. No-op
    without glibc.
    """
    import ctypes

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
