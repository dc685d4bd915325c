"""`FeatureExtractor`: images in, (n, D) float32 out. Pure PyTorch, no Spark.

An input is encoded image bytes, a path or URI, a `PixelRecord` (decoded pixels) or None.
Inputs arrive as a stream of batches (Spark's Arrow batches, or one list) and go through
stages, each bounded in what it holds:

    read        paths -> bytes, `read_ahead` reads in flight (I/O threads)
    host        check, then the Pillow path -> a preprocessed tensor, or for the GPU decoder
                the checked JPEG bytes (decode threads, a window ahead of the loop)
    gpu decode  JPEG bytes -> nvJPEG in batches -> resized, cropped on the GPU (this thread)
    batch       re-chunked into inference batches of exactly `batch_size` across input
                batches; normalized on the model's device in one op per batch
    forward     the model; on a GPU one batch stays in flight while the next is prepared,
                and its features come back through pinned memory (the only synchronize)
    return      each input batch complete, in order, with its length: features, or a NaN
                row plus a reason
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import repeat
from typing import Any

import numpy as np
import torch

from ._cache import MODELS
from ._threads import one_openmp_thread
from ._types import ModelFactory
from .config import ExtractorConfig, with_config_options
from .decode import Decoding, Encoded, normalize, prepare, read_path
from .decode import gpu as gpu_decode
from .decode.header import DecodeError
from .errors import ImageError
from .models import (
    LoadedModel,
    default_batch_size,
    default_decode_threads,
    forward,
    load_model,
    warn_once,
)

log = logging.getLogger(__name__)

Features = np.ndarray  # (n, D) float32, NaN rows where an input failed
Errors = list[str | None]
DEFAULT_READ_AHEAD = 16


@dataclass
class _Pending:
    """One input batch being filled in, possibly across several inference batches."""

    size: int
    features: np.ndarray | None = None
    errors: Errors = field(default_factory=list)
    resolved: int = 0

    def __post_init__(self) -> None:
        self.errors = [None] * self.size


Row = tuple[_Pending, int]  # an input batch and the row's index in it
Entry = tuple[Row, object, str]  # a row, its input, its name for errors


class FeatureExtractor:
    """The featurex engine without Spark.

    >>> fx = FeatureExtractor(model="resnet18", weights=None)
    >>> features, errors = fx.extract([jpeg_bytes, b"not an image", None])
    >>> features.shape, errors[1] is not None
    ((3, 512), True)
    """

    # Where the GPU decoder runs when not on the model's GPU: the tests set the CPU, where
    # torchvision decodes the same batches, to run the GPU path without a GPU.
    _decoder_device: torch.device | None = None
    # The largest batch known to fit on the GPU, after an out-of-memory error (None: any).
    _fits: int | None = None

    @with_config_options
    def __init__(
        self,
        model: str | ModelFactory = "resnet50",
        weights: str | None = "DEFAULT",
        **options: Any,
    ) -> None:
        """`options` are `ExtractorConfig`'s fields: batch_size, device, precision, normalize,
        on_error, ... (see `help(FeatureExtractor)`)."""
        self.device: str | None = None
        self.config = ExtractorConfig.from_options(model, weights, options)

    @classmethod
    def from_config(cls, config: ExtractorConfig, device: str | None = None) -> FeatureExtractor:
        """The engine for a validated config; `device` overrides its device (a task's GPU)."""
        self = cls.__new__(cls)
        self.config = config
        self.device = device
        return self

    @property
    def loaded(self) -> LoadedModel:
        """The model, from this process's cache (built on first use)."""
        return MODELS.get(self._key, partial(load_model, self.config, self.device))

    def _is_cached(self) -> bool:
        """Whether this process's cache holds the model now (a look that counts no hit)."""
        return MODELS.info(self._key)["size"] == 1

    @property
    def _key(self) -> str:
        return self.config.key if self.device is None else f"{self.config.key}|on={self.device}"

    @property
    def dim(self) -> int:
        """Feature size D."""
        return self.loaded.dim

    @property
    def batch_size(self) -> int:
        """The inference batch size: the config's, or the device's default."""
        return self._batch_size(self.loaded)

    def _batch_size(self, loaded: LoadedModel) -> int:
        return self.config.batch_size or default_batch_size(loaded.device)

    def extract(self, images: Sequence[object]) -> tuple[Features, Errors]:
        """Features for a list of images (bytes, paths, PixelRecords or None).

        Returns ((n, D) float32, reasons): a row that fails is all-NaN and has a reason; the
        others have reason None.
        """
        return next(self.extract_batches([images]))

    def extract_batches(
        self,
        batches: Iterable[Sequence[object]],
        names: Iterable[Sequence[str | None]] | None = None,
    ) -> Iterator[tuple[Features, Errors]]:
        """Like `extract`, over a stream of batches, one result per input batch, in order.

        `names` (one sequence per batch, such as file paths) only label rows in the error
        raised with on_error="raise"; a path input is its own name.
        """
        loaded = self.loaded  # one cache lookup per stream (a Spark task)
        with _Stream(self, loaded) as stream:
            yield from stream.run(batches, names)

    def decoding(self, loaded: LoadedModel) -> tuple[Decoding, gpu_decode.GpuDecoder | None]:
        """How this stream decodes: the host side's settings, and the GPU decoder where JPEGs
        go to one (`decode="auto"` with the model on CUDA, or `"gpu"`)."""
        config, pre = self.config, loaded.preprocessing
        device = self._decoder_device or loaded.device
        host = Decoding(loaded.transform, pre, config.max_pixels, bool(config.fast_decode))
        if config.decode == "cpu":
            return host, None
        if device.type != "cuda" and self._decoder_device is None:
            if config.decode == "gpu":
                raise RuntimeError(
                    f"decode='gpu' but the model runs on {device} (no CUDA device in this "
                    f"process): use decode='auto' or 'cpu', or run on GPU workers"
                )
            return host, None
        if pre is None:
            if config.decode == "gpu":
                raise RuntimeError(
                    "decode='gpu' but the model's transform is not one featurex can run on "
                    "tensors: use decode='auto' or 'cpu' (its images are then decoded and "
                    "preprocessed on the CPU)"
                )
            warn_once(
                "the model's transform is not one featurex can run on tensors (a transform= "
                "of your own?): images are decoded and preprocessed on the CPU"
            )
            return host, None
        if device.type == "cuda" and not gpu_decode.available(device):
            if config.decode == "gpu":
                raise RuntimeError(
                    f"decode='gpu' but torchvision cannot decode JPEGs on {device} (a build "
                    f"without nvJPEG?): use decode='auto' or 'cpu'"
                )
            return host, None

        def on_cpu(data: bytes | bytearray | memoryview) -> tuple[torch.Tensor | None, str | None]:
            tensor, reason = prepare(data, host)  # host.gpu is False: never Encoded
            return (tensor if isinstance(tensor, torch.Tensor) else None), reason

        return replace(host, gpu=True), gpu_decode.GpuDecoder(device, pre, on_cpu)

    def _forward(
        self,
        loaded: LoadedModel,
        batch: Sequence[torch.Tensor] | torch.Tensor,
        prepare: Callable[[Any], torch.Tensor] = lambda batch: batch,
    ) -> torch.Tensor:
        """The model's (n, D) float32 output on its device for `prepare(batch)` (the stream's
        crops -> the model's input: stacked, moved, normalized), halving the batch on a CUDA
        out-of-memory error in either (with one warning) until it fits; later batches start
        from the size that fit."""
        n = len(batch)
        if self._fits is None or n <= self._fits:
            try:
                return _infer(loaded, prepare(batch))
            except Exception as exc:
                if n == 1 or not gpu_decode.out_of_memory(exc):
                    raise
                self._fits = (n + 1) // 2
            # Retried out of the except block: its traceback holds the failed pass's frames,
            # and with them the activations that filled the memory.
            torch.cuda.empty_cache()
            warn_once(
                "CUDA out of memory: running batches in halves until they fit (a smaller "
                "batch_size avoids the retries)"
            )
        step = self._fits
        return torch.cat(
            [self._forward(loaded, batch[i : i + step], prepare) for i in range(0, n, step)]
        )

    def _finish(self, loaded: LoadedModel, features: np.ndarray, rows: int) -> np.ndarray:
        # Check every batch before it leaves: one row per input, one width, float32.
        if features.shape != (rows, loaded.dim):
            raise RuntimeError(
                f"model output has shape {tuple(features.shape)}, expected ({rows}, {loaded.dim})"
            )
        if self.config.normalize:  # unit rows; an all-zero row stays zero
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            features = features / np.maximum(norms, np.finfo(np.float32).tiny)
        return features


class _Stream:
    """The stages for one stream of input batches (one Spark task)."""

    def __init__(self, engine: FeatureExtractor, loaded: LoadedModel) -> None:
        config = engine.config
        self.engine, self.loaded, self.config = engine, loaded, config
        self.batch_size = engine._batch_size(loaded)
        self.host, self.gpu = engine.decoding(loaded)
        self.threads = config.decode_threads or default_decode_threads(loaded.device)
        log.info(
            "this task decodes %s, on %d threads",
            f"JPEGs with nvJPEG on {self.gpu.device} and other files with Pillow"
            if self.gpu
            else "with Pillow",
            self.threads,
        )
        # Host work at most this far ahead of the loop: bounds memory whatever the input
        # batch size (and, with a GPU decoder, fills its batches).
        self.window = self.batch_size + 2 * self.threads + (self.batch_size if self.gpu else 0)
        self.read_ahead = config.read_ahead or DEFAULT_READ_AHEAD
        self.device = _Transfers(loaded.device)
        self.open_batches: deque[_Pending] = deque()
        self.chunk: list[tuple[Row, torch.Tensor]] = []
        self.jpegs: list[tuple[Row, str, Encoded]] = []
        self.in_flight: deque[tuple[list[Row], Any]] = deque()
        self._stack = ExitStack()

    def __enter__(self) -> _Stream:
        self.pool = self._stack.enter_context(
            ThreadPoolExecutor(self.threads, "featurex-decode", initializer=one_openmp_thread)
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def run(
        self, batches: Iterable[Sequence[object]], names: Iterable[Sequence[str | None]] | None
    ) -> Iterator[tuple[Features, Errors]]:
        labels: Iterable[Sequence[str | None] | None] = repeat(None) if names is None else names
        source = self._read(self._inputs(batches, labels))
        inflight: deque[tuple[Row, str, Future[tuple[object, str | None]]]] = deque()
        work = partial(_host, how=self.host)

        def refill() -> None:
            while len(inflight) < self.window:
                nxt = next(source, None)
                if nxt is None:
                    return
                row, item, name = nxt
                inflight.append((row, name, self.pool.submit(work, item)))

        try:
            refill()
            yield from self._finished()  # empty input batches
            while inflight:
                row, name, future = inflight.popleft()
                prepared, reason = future.result()
                refill()
                if reason is not None:
                    self._fail(row, name, reason)
                elif isinstance(prepared, Encoded):
                    self.jpegs.append((row, name, prepared))
                    if len(self.jpegs) >= self.batch_size:
                        self._decode_on_gpu()
                else:
                    assert isinstance(prepared, torch.Tensor)
                    self._add(row, prepared)
                yield from self._finished()
            self._decode_on_gpu()
            if self.chunk:
                self._launch()
            while self.in_flight:
                self._land()
            yield from self._finished()
        finally:
            for *_, future in inflight:
                future.cancel()

    # ------------------------------------------------------------------ read

    def _inputs(
        self, batches: Iterable[Sequence[object]], labels: Iterable[Sequence[str | None] | None]
    ) -> Iterator[tuple[Row, object, str]]:
        number = 0
        for batch, batch_names in zip(batches, labels, strict=False):
            pending = _Pending(len(batch))
            self.open_batches.append(pending)
            for i, item in enumerate(batch):
                name = batch_names[i] if batch_names is not None else None
                if name is None:
                    name = item if isinstance(item, str) else getattr(item, "origin", None)
                yield (pending, i), item, repr(name) if name else f"input row {number}"
                number += 1

    def _read(
        self, entries: Iterator[tuple[Row, object, str]]
    ) -> Iterator[tuple[Row, object, str]]:
        """Paths replaced by their reads, `read_ahead` of them in flight ahead of the host
        stage (the I/O threads start with the first path)."""
        queue: deque[tuple[Row, object, str]] = deque()
        pool: ThreadPoolExecutor | None = None
        for row, item, name in entries:
            if isinstance(item, str):
                if pool is None:
                    pool = self._stack.enter_context(
                        ThreadPoolExecutor(self.read_ahead, "featurex-read")
                    )
                item = pool.submit(_read_bytes, item)
            queue.append((row, item, name))
            if len(queue) > self.read_ahead:
                yield queue.popleft()
        yield from queue

    # ------------------------------------------------------------------ decode on the GPU

    def _decode_on_gpu(self) -> None:
        if not self.jpegs:
            return
        assert self.gpu is not None
        jpegs, self.jpegs = self.jpegs, []
        results = self.gpu.decode([enc for _, _, enc in jpegs])
        for (row, name, _), (tensor, reason) in zip(jpegs, results, strict=True):
            if reason is not None:
                self._fail(row, name, reason)
            else:
                assert tensor is not None
                self._add(row, tensor)

    # ------------------------------------------------------------------ batch, forward

    def _add(self, row: Row, tensor: torch.Tensor) -> None:
        self.chunk.append((row, _model_input(tensor, self.chunk)))
        if len(self.chunk) == self.batch_size:
            self._launch()

    def _fail(self, row: Row, name: str, reason: str) -> None:
        if self.config.on_error == "raise":
            raise ImageError(f"cannot featurize {name}: {reason}")
        pending, i = row
        pending.errors[i] = reason
        pending.resolved += 1

    def _launch(self) -> None:
        """Run the chunk's forward pass; its features land after the next one is launched,
        so that on a GPU the host prepares batch k+1 while batch k runs."""
        chunk, self.chunk = self.chunk, []
        rows = [row for row, _ in chunk]
        crops = [tensor for _, tensor in chunk]
        del chunk
        out = self.engine._forward(self.loaded, crops, self._batch)
        del crops  # views of whole resized images: freed before the next batch fills
        self.in_flight.append((rows, self.device.download(out)))
        while len(self.in_flight) > (1 if self.device.cuda else 0):
            self._land()

    def _batch(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Crops -> the model's input on its device: stacked, moved, normalized."""
        target = self.loaded.device
        if len({(t.device, t.dtype) for t in tensors}) > 1:  # Pillow's crops among the GPU's
            tensors = self._together(tensors)
        batch = self.device.upload(torch.stack(tensors))
        assert batch.device == target
        pre = self.loaded.preprocessing
        if pre is not None:  # crops of pixels (0-255): normalized on the device, per batch
            batch = normalize(batch, pre)
        return batch.contiguous(memory_format=torch.channels_last)

    def _together(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """A batch of the GPU decoder's float crops and Pillow's uint8 ones, all as float on
        the model's device: the host crops go up in one copy, not one each."""
        target = self.loaded.device
        host = [i for i, t in enumerate(tensors) if t.device != target]
        together = list(tensors)
        if host:
            moved = self.device.upload(torch.stack([tensors[i] for i in host])).float()
            for i, tensor in zip(host, moved, strict=True):
                together[i] = tensor
        return [t.float() for t in together]  # a float tensor is returned as it is

    def _land(self) -> None:
        rows, handle = self.in_flight.popleft()
        features = self.engine._finish(self.loaded, self.device.wait(handle), len(rows))
        for (pending, i), values in zip(rows, features, strict=True):
            if pending.features is None:
                pending.features = np.full((pending.size, features.shape[1]), np.nan, np.float32)
            pending.features[i] = values
            pending.resolved += 1

    def _finished(self) -> Iterator[tuple[Features, Errors]]:
        while self.open_batches and self.open_batches[0].resolved == self.open_batches[0].size:
            done = self.open_batches.popleft()
            features = done.features
            if features is None:  # no row of this batch succeeded: NaN rows of the right width
                features = np.full((done.size, self.loaded.dim), np.nan, np.float32)
            yield features, done.errors


class _Transfers:
    """Host <-> device copies. On a GPU: through pinned host buffers that are reused (pinning
    memory costs more than the copy), without blocking, and one wait per batch for its
    features; on the CPU: nothing to copy."""

    def __init__(self, device: torch.device) -> None:
        self.target = device
        self.cuda = device.type == "cuda"
        self._up = _PinnedRing(device)
        self._down = _PinnedRing(device)

    def upload(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device == self.target:
            return tensor
        if not self.cuda:
            return tensor.to(self.target)
        host, slot = self._up.take(tensor.shape, tensor.dtype)
        host.copy_(tensor)
        moved = host.to(self.target, non_blocking=True)
        self._up.release(slot)  # reused once the copy, queued now, has run
        return moved

    def download(self, out: torch.Tensor) -> Any:
        if not self.cuda:
            return out
        host, slot = self._down.take(out.shape, out.dtype)
        host.copy_(out, non_blocking=True)
        return host, self._down.release(slot)

    def wait(self, handle: Any) -> np.ndarray:
        if not self.cuda:
            return handle.numpy()  # type: ignore[no-any-return]
        host, done = handle
        done.synchronize()  # the one synchronize: this batch's features are on the host
        return host.numpy()  # type: ignore[no-any-return]


class _PinnedRing:
    """Two pinned host buffers used in turn: one batch's copy can be in flight while the
    next is staged. A buffer is handed out again only after the copy queued on it ran."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._copied: list[Any] = [None, None]
        self._next = 0

    def take(self, shape: torch.Size, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
        slot, self._next = self._next, 1 - self._next
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()
        need = int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < need:
            buffer = self._buffers[slot] = gpu_decode.pinned_bytes(need, self.device)
        return buffer[:need].view(dtype).view(shape), slot

    def release(self, slot: int) -> Any:
        """Mark the copies queued so far on this slot's buffer; returns their event."""
        done = torch.cuda.Event()  # type: ignore[no-untyped-call]
        done.record(torch.cuda.current_stream(self.device))  # the model's GPU, not GPU 0
        self._copied[slot] = done
        return done


def _host(item: object, how: Decoding) -> tuple[object, str | None]:
    """A decode thread's work on one input: its read's result, then `prepare`."""
    if isinstance(item, Future):
        item, reason = item.result()
        if reason is not None:
            return None, reason
    return prepare(item, how)


def _read_bytes(path: str) -> tuple[bytes | None, str | None]:
    try:
        return read_path(path), None
    except DecodeError as exc:
        return None, str(exc)


def _infer(loaded: LoadedModel, batch: torch.Tensor) -> torch.Tensor:
    """The model's (n, D) output for a batch. A frozen CPU graph runs only at the batch size
    it was compiled for: smaller batches are padded, larger ones run in parts."""
    n = batch.shape[0]
    step = loaded.graph_batch or n
    parts = []
    for start in range(0, n, step):
        part = batch[start : start + step]
        rows = part.shape[0]
        if rows < step:  # copies of the last image; the padding is dropped
            pad = part[-1:].expand(step - rows, -1, -1, -1)
            part = torch.cat([part, pad]).contiguous(memory_format=torch.channels_last)
        parts.append(forward(loaded.module, part, loaded.autocast_dtype)[:rows])
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _model_input(tensor: torch.Tensor, chunk: list[tuple[Row, torch.Tensor]]) -> torch.Tensor:
    """A transform bug is a configuration error, not a bad image: say so clearly."""
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
        got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise TypeError(f"transform must return a float CHW image tensor, got {got}")
    if chunk and chunk[0][1].shape != tensor.shape:
        raise ValueError(
            f"transform returned tensors of different shapes, {tuple(chunk[0][1].shape)} and "
            f"{tuple(tensor.shape)}: it must crop or resize to a fixed size"
        )
    return tensor
