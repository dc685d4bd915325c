"""The runtime every family shares: device, precision, graph optimization, checks. No Spark.

`load_model(config)` builds what a worker caches: the family's feature trunk and its
preprocessing, pruned of what the image path never runs, on its device, traced and fused
where that is faithful, with its feature size and how to run it (autocast dtype, batch).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, cast

import torch
from torch import nn

from .._threads import task_cores
from .._types import Transform
from ..decode import Preprocessing, describe, resize_target
from ..decode.preprocess import agrees_with
from ..errors import first_line
from . import graph_cache, quantize
from .base import Built, ModelSpec
from .registry import family

log = logging.getLogger(__name__)
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
    # `transform` as data, for the decoders (`decode.preprocess`); None: run it per image.
    preprocessing: Preprocessing | None = None


def resolve_device(spec: str) -> torch.device:
    """The device for a spec. A CUDA device always carries its index: the tensors on it say
    `cuda:0`, and torch.device("cuda") != torch.device("cuda:0"), so an index-less device
    would make every "is it there already" check fail."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise RuntimeError(f"device={spec!r} but CUDA is not available in this process")
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


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
    # On the CPU, inference dominates: one thread decodes ahead of the forward pass. A GPU is
    # starved by CPU decoding, so the host side gets every core of the task, and no more.
    return task_cores() if device.type == "cuda" else 1


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision on a device, or None for plain fp32 (and for int8
    on the CPU, which quantizes instead)."""
    if precision == "fp32":
        return None
    if precision == "int8":
        if device.type == "cuda":  # the quantized kernels are the CPU's
            warn_once(f"int8 runs on the CPU only; running fp16 on {device}")
            return torch.float16
        if quantize.engine() is None:
            warn_once("int8 needs torch's x86 quantized engine, which this build lacks; fp32")
        return None
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            warn_once(f"bf16 is not supported on {device}; running fp32")
            return None
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "bf16" and _cpu_has_bf16():
        return torch.bfloat16
    warn_once(f"{precision} is not supported on this CPU; running fp32")
    return None


def check_precision(precision: str, device: str) -> None:
    """On the driver: warn now, not only in worker logs, when a precision will run as fp32,
    and when it is likely slower than fp32 on this CPU.

    The driver's CPU stands in for the executors'; the workers check their own as well.
    """
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        autocast_dtype(precision, torch.device("cpu"))
        slower = slower_than_fp32(precision)
        if slower is not None:
            warn_once(slower)


def precision_ran(precision: str, device: str) -> str | None:
    """The precision that runs for `precision` on `device` ("cpu", "cuda", "cuda:N", or
    "auto": a GPU if this process sees one), by this machine's probes, as `autocast_dtype`
    decides it: bf16 on a CPU without bf16 kernels, and fp16 on any CPU, run fp32; int8
    runs fp16 on a GPU. None for a GPU this process lacks (a cluster's executors decide).

    An int8 model that fails its check against fp32 at load also runs fp32: a worker warns
    then, and this cannot know it.
    """
    kind = device.partition(":")[0]
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        return None
    if precision == "fp32":
        return "fp32"
    if precision == "int8":
        if kind == "cuda":
            return "fp16"
        return "int8" if quantize.engine() is not None else "fp32"
    if kind == "cuda":
        return "fp32" if precision == "bf16" and not torch.cuda.is_bf16_supported() else precision
    return "bf16" if precision == "bf16" and _cpu_has_bf16() else "fp32"


# Speed order of the CPU precisions, as `recommended_precision` ranks them.
_CPU_RANK = {"fp32": 0, "bf16": 1, "int8": 2}


def slower_than_fp32(precision: str) -> str | None:
    """One line where `precision` (bf16, int8) is likely slower than fp32 on this CPU, by
    `featurex info`'s own measure (`recommended_precision`): int8 without int8 dot-product
    instructions (VNNI, AMX), bf16 without bf16 kernels. None otherwise."""
    recommended = recommended_precision()
    if precision not in ("bf16", "int8") or _CPU_RANK[precision] <= _CPU_RANK[recommended]:
        return None
    if precision_ran(precision, "cpu") != precision:
        return None  # it runs fp32: autocast_dtype says so
    lacks = "int8 dot-product instructions (VNNI, AMX)" if precision == "int8" else "bf16 kernels"
    return (
        f"{precision} is likely slower than fp32 on this CPU, which has no {lacks}: "
        f"`featurex info` recommends {recommended} here"
    )


# The instruction sets that decide CPU inference speed, as /proc/cpuinfo names them.
CPU_FEATURES = ("amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512f", "avx2")


@lru_cache(maxsize=1)
def cpu_features() -> tuple[str, ...]:
    """Which of `CPU_FEATURES` this CPU has (Linux; elsewhere torch's own capability)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            line = next(ln for ln in cpuinfo if ln.startswith("flags"))
        flags = set(line.split(":", 1)[1].split())
    except (OSError, StopIteration):
        capability = torch.backends.cpu.get_cpu_capability().lower()  # "avx512", "avx2", ...
        flags = {"avx512f", "avx2"} if capability.startswith("avx512") else {capability}
    return tuple(f for f in CPU_FEATURES if f in flags)


def recommended_precision() -> str:
    """The fastest CPU precision whose features stay close to fp32 (cosine >= 0.99 on the
    benchmark's photos, measured): int8 where the CPU has int8 dot products (VNNI, AMX),
    else bf16 where it has bf16 ones, else fp32."""
    features = set(cpu_features())
    if features & {"amx_int8", "avx512_vnni", "avx_vnni"} and quantize.engine() is not None:
        return "int8"
    if _cpu_has_bf16():
        return "bf16"
    return "fp32"


@lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    return bool(
        torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


@cache
def warn_once(message: str) -> None:
    """Log a warning once per process (per message)."""
    log.warning(message)


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
        warn_once(f"cannot optimize the model for inference ({first_line(exc)}); running eager")
        return None


def _fuse(
    graph: nn.Module,
    batch: torch.Tensor,
    want: torch.Tensor,
    dtype: torch.dtype | None,
    say: Callable[[str], None] = warn_once,
) -> bool:
    """Compile a frozen graph's oneDNN Graph fusions for `batch`'s shape; True if its output
    then matches eager's (`want`).

    ResNet-50 in Spark, `local[2]`, batch 4: 1.06x (fp32) and 1.18x (bf16) the speed of
    `torch.jit.optimize_for_inference` (measured), which is itself 1.2x eager. The kernels
    are compiled for the shape of the first runs, so the graph is run at that batch size only
    (`LoadedModel.graph_batch`): another shape would compile again and hold more memory
    (+100 MB for ResNet-50). The graph executor profiles the first run and fuses at the
    second: the run checked. Where oneDNN Graph fails on a pattern (a Linear followed by a
    per-channel multiply, in torch 2.14: "vector::_M_range_check"), the frozen graph runs
    unfused; a family's `trace_rewrite` can avoid the pattern (DINOv2's layer scales).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with _onednn_fusion():
                    forward(graph, batch, dtype)
                    got = forward(graph, batch, dtype)
            except Exception as exc:
                log.info("oneDNN Graph cannot fuse the model (%s): unfused", first_line(exc))
                forward(graph, batch, dtype)
                got = forward(graph, batch, dtype)
        error = _relative_error(got, want)
    except Exception as exc:
        say(f"cannot optimize the model for inference ({first_line(exc)}); running eager")
        return False
    if not error <= (1e-4 if dtype is None else 2e-2):
        say(f"the optimized model differs from eager by {error:.2g}; running eager")
        return False
    return True


def load_model(config: ModelSpec, device: str | None = None) -> LoadedModel:
    """Build the model described by a config, on `device` (default: the config's).

    Slow; callers go through the cache.
    """
    target = resolve_device(device or config.device)
    dtype = autocast_dtype(config.precision, target)
    cached = None
    if target.type == "cpu" and config.optimize is not False:
        cached = graph_cache.entry_name(config, dtype)
        if cached is not None:
            hit = _from_cache(cached, target, dtype)
            if hit is not None:
                return hit
    built = _eager(config)
    module, transform = _for_inference(built.module, target), built.transform
    optimize = built.optimize and (dtype is None or built.optimize_reduced)
    rewrite = built.trace_rewrite
    del built  # `module` holds the only reference, freed below before the fusion compiles

    def rebuilt() -> nn.Module:  # the eager model again, where a step may have changed it
        return _for_inference(_eager(config).module, target)

    example = _example_batch(transform).to(target)
    if config.optimize is not None:
        optimize = config.optimize
    graph_batch = None
    int8 = config.precision == "int8" and target.type == "cpu" and quantize.engine() is not None
    pre = _preprocessing(transform)
    if int8:
        quantized = _int8(module, transform, config.calibration)
        if quantized is not None:
            module, optimize = quantized, False
            graph = _int8_graph(quantized, example)
            if graph is not None:  # the same numbers, and a file the next load reads
                module = graph
                if cached is not None and pre is not None:
                    want = forward(graph, example, None)
                    entry = graph_cache.Entry(graph, example, want, int(want.shape[1]), None, pre)
                    graph_cache.store(cached, entry)
        else:  # run fp32; quantizing may have left the eager model changed: build it again
            del module
            module = rebuilt()
    if optimize and target.type == "cpu":
        # A frozen CPU graph is compiled for one batch size: checked at it, run at it.
        batch_size = config.batch_size or default_batch_size(target)
        batch = _repeat_to(example, batch_size)
        out = forward(module, batch, dtype)  # eager: the reference for the check
        if rewrite is not None:
            # Checked with the graph, against `out` (the model as built). Where tracing then
            # fails, the rewritten module runs eager: the same function, unchecked here.
            try:
                rewrite(module)
            except Exception as exc:  # it may have stopped halfway: trace the model as built
                log.info("featurex could not rewrite the model for tracing (%s)", first_line(exc))
                module = rebuilt()
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
                if cached is not None and pre is not None:
                    entry = graph_cache.Entry(
                        graph, example, out, int(out.shape[1]), batch_size, pre
                    )
                    graph_cache.store(cached, entry)
            del graph
            if not fused:  # rare: build the eager model again
                gc.collect()
                module = rebuilt()
    else:
        out = forward(module, example, dtype)
    if graph_batch is None and dtype is not None and target.type == "cpu":
        _cast_weights(module, dtype)
    dim = int(out.shape[1])
    log.info(
        "featurex loaded %s on %s (dim=%s, autocast=%s)", config.describe(), target, dim, dtype
    )
    loaded = LoadedModel(
        module, transform, dim, target, dtype, resize_target(transform), graph_batch, pre,
    )  # fmt: skip
    del module
    _trim_heap()
    return loaded


def _from_cache(name: str, target: torch.device, dtype: torch.dtype | None) -> LoadedModel | None:
    """The model from the graph cache, checked as a fresh build's graph is; None on a miss."""
    entry = graph_cache.load(name)
    if entry is None:
        return None
    if entry.graph_batch is None:  # int8: a traced quantized model, run as it is
        try:
            good = _relative_error(forward(entry.graph, entry.example, dtype), entry.want) <= 1e-5
        except Exception as exc:  # a graph that loads but cannot run: as a failed check
            log.info("featurex's cached int8 model does not run (%s)", first_line(exc))
            good = False
    else:
        batch = _repeat_to(entry.example, entry.graph_batch)
        good = _fuse(entry.graph, batch, entry.want, dtype, say=log.info)
    if not good:
        log.warning("featurex's cached graph %s failed its check: rebuilding it", name)
        graph_cache.discard(name)  # stale or corrupt: built again below, and replaced
        return None
    transform = graph_cache.Described(entry.preprocessing)
    log.info("featurex loaded the optimized graph from its cache (%s) on %s", name, target)
    loaded = LoadedModel(
        entry.graph, transform, entry.dim, target, dtype, entry.preprocessing.resize_target,
        entry.graph_batch, entry.preprocessing,
    )  # fmt: skip
    del entry
    _trim_heap()
    return loaded


def _preprocessing(transform: Transform) -> Preprocessing | None:
    """The model's preprocessing as data, checked to give what its transform gives."""
    described = describe(transform)
    if described is None:
        return None
    worst = agrees_with(described, transform)
    if worst is not None:
        warn_once(
            f"featurex's reading of the model's preprocessing differs from it (by {worst:.2g}):"
            f" images are preprocessed by the model's own transform, on the CPU"
        )
        return None
    return described


def _build(config: ModelSpec) -> Built:
    """The family's model on the CPU; the config's transform replaces the family's."""
    built = family(config.source.family).build(config.source, config.seed)
    if config.transform is not None:
        built.transform = config.transform
    return built


def _eager(config: ModelSpec) -> Built:
    """The family's model in eval mode on the CPU, pruned of what its image path does not run."""
    built = _build(config)
    built.module.eval()
    if built.prunable is not None:
        _drop_unused(built.module, built.prunable, _example_batch(built.transform))
    return built


def _int8(module: nn.Module, transform: Transform, calibration: str | None) -> nn.Module | None:
    """The model quantized to int8, calibrated and checked against fp32 on the calibration
    images; None, with a warning (once), where it cannot be or does not agree."""
    batch = quantize.calibration_batch(transform, calibration)
    want = forward(module, batch, None)
    try:
        quantized, how = quantize.quantize(module, batch)
        cosine = quantize.agreement(forward(quantized, batch, None), want)
    except Exception as exc:
        warn_once(f"cannot quantize the model to int8 ({first_line(exc)}); running fp32")
        return None
    if not cosine >= quantize.MIN_COSINE:
        warn_once(
            f"the int8 model differs from fp32 (cosine {cosine:.4f} < {quantize.MIN_COSINE} "
            f"on the calibration images); running fp32"
        )
        return None
    log.info("featurex quantized the model to int8 (%s; cosine to fp32 %.5f)", how, cosine)
    return quantized


def _int8_graph(quantized: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """The quantized model traced and frozen, where that gives its numbers (to 1e-5): one
    file for the graph cache, so a later worker skips quantizing (ResNet-50: 8.5 s) and loads
    it in 0.1 s. None where it cannot be traced or differs: the model runs as quantized."""
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(quantized, example[:1], check_trace=False)  # type: ignore[no-untyped-call]
            graph = cast(nn.Module, torch.jit.freeze(traced))
            error = _relative_error(
                forward(graph, example, None), forward(quantized, example, None)
            )
    except Exception as exc:
        log.info("featurex cannot trace the int8 model (%s): not cached", first_line(exc))
        return None
    if not error <= 1e-5:
        log.info("the traced int8 model differs by %.2g: not cached", error)
        return None
    return graph


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest row-wise relative L2 difference."""
    return float(((got - want).norm(dim=1) / want.norm(dim=1).clamp_min(1e-12)).max())


def _cast_weights(module: nn.Module, dtype: torch.dtype) -> None:
    """Store the weights that autocast would cast on every call in its dtype, once: the same
    numbers (autocast runs these layers in `dtype`), computed once, in half the memory.

    Eager only: a frozen graph folds batchnorm into the convolutions in the weights' dtype,
    which is better done in fp32 (and the graph holds its casts as constants anyway).
    CPU time per image, one thread, bf16 (measured): ResNet-50 eager 55 -> 50 ms, CLIP
    ViT-B/16 230 -> 217 ms, DINOv2-S unchanged.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            layer.to(dtype)


def _drop_unused(module: nn.Module, towers: nn.Module, example: torch.Tensor) -> None:
    """Drop the direct children of `towers` that computing features never runs (a CLIP
    model's text tower: 63M of ViT-B/16 CLIP's 150M parameters), if the output stays the same.

    Which children run is seen with hooks on one forward pass; the output after dropping is
    checked against the one before, and anything that differs or fails puts them back.
    """
    ran: set[str] = set()
    children = dict(towers.named_children())
    hooks = [
        child.register_forward_pre_hook(lambda *_, name=name: ran.add(name))
        for name, child in children.items()
    ]
    try:
        before = forward(module, example, None)
    finally:
        for hook in hooks:
            hook.remove()
    unused = [name for name in children if name not in ran]
    if not unused:
        return
    for name in unused:
        setattr(towers, name, None)
    try:
        after = forward(module, example, None)
        same = after.shape == before.shape and bool(torch.allclose(after, before, 1e-6, 1e-7))
    except Exception:  # it was used after all (an attribute, not a call): keep it
        same = False
    if not same:
        warn_once(f"could not drop the unused parts {unused} of the model; keeping them")
        for name in unused:
            setattr(towers, name, children[name])
    else:
        log.info("dropped %s, which the image features do not use", unused)


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
