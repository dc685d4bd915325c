"""`FeatureExtractor`: images in, (n, D) float32 out. Pure PyTorch, no Spark.

An input is encoded image bytes, a path or URI, a `PixelRecord` (decoded pixels) or None.

Inputs arrive as a stream of batches (Spark's Arrow batches, or one list). Decoding runs on a
small thread pool a window ahead of inference; decoded tensors are re-chunked into inference
batches of exactly `batch_size`, across input batch boundaries; each input batch comes back
complete, in order, with the same length: features, or a NaN row plus a reason.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from typing import Any

import numpy as np
import torch

from ._cache import MODELS
from ._types import ModelFactory
from .config import ExtractorConfig, with_config_options
from .decode import prepare
from .errors import ImageError
from .models import (
    LoadedModel,
    default_batch_size,
    default_decode_threads,
    forward,
    load_model,
)

log = logging.getLogger(__name__)

Features = np.ndarray  # (n, D) float32, NaN rows where an input failed
Errors = list[str | None]


@dataclass
class _Pending:
    """One input batch being filled in, possibly across several inference batches."""

    size: int
    features: np.ndarray | None = None
    errors: Errors = field(default_factory=list)
    resolved: int = 0

    def __post_init__(self) -> None:
        self.errors = [None] * self.size


class FeatureExtractor:
    """The featurex engine without Spark.

    >>> fx = FeatureExtractor(model="resnet18", weights=None)
    >>> features, errors = fx.extract([jpeg_bytes, b"not an image", None])
    >>> features.shape, errors[1] is not None
    ((3, 512), True)
    """

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
        batch_size = self._batch_size(loaded)
        threads = self.config.decode_threads or default_decode_threads(loaded.device)
        # Decode at most this far ahead: bounds memory whatever the input batch size.
        window = batch_size + 2 * threads
        work = partial(
            prepare,
            transform=loaded.transform,
            max_pixels=self.config.max_pixels,
            resize_size=loaded.resize_size,
            fast_decode=bool(self.config.fast_decode),
        )
        labels: Iterable[Sequence[str | None] | None] = repeat(None) if names is None else names

        open_batches: deque[_Pending] = deque()
        inflight: deque[tuple[_Pending, int, str, Future[tuple[object, str | None]]]] = deque()
        chunk: list[tuple[_Pending, int, torch.Tensor]] = []

        def inputs() -> Iterator[tuple[_Pending, int, object, str]]:
            row = 0
            for batch, batch_names in zip(batches, labels, strict=False):
                pending = _Pending(len(batch))
                open_batches.append(pending)
                for i, item in enumerate(batch):
                    name = batch_names[i] if batch_names is not None else None
                    if name is None:
                        name = item if isinstance(item, str) else getattr(item, "origin", None)
                    yield pending, i, item, repr(name) if name else f"input row {row}"
                    row += 1

        def finished() -> Iterator[tuple[Features, Errors]]:
            while open_batches and open_batches[0].resolved == open_batches[0].size:
                done = open_batches.popleft()
                yield self._result(done, loaded), done.errors

        source = inputs()
        with ThreadPoolExecutor(threads, thread_name_prefix="featurex-decode") as pool:

            def refill() -> None:
                while len(inflight) < window:
                    nxt = next(source, None)
                    if nxt is None:
                        return
                    pending, i, item, name = nxt
                    inflight.append((pending, i, name, pool.submit(work, item)))

            try:
                refill()
                yield from finished()  # empty input batches
                while inflight:
                    pending, i, name, future = inflight.popleft()
                    tensor, reason = future.result()
                    refill()
                    if reason is not None:
                        if self.config.on_error == "raise":
                            raise ImageError(f"cannot featurize {name}: {reason}")
                        pending.errors[i] = reason
                        pending.resolved += 1
                    else:
                        chunk.append((pending, i, _model_input(tensor, chunk)))
                        if len(chunk) == batch_size:
                            self._run_chunk(loaded, chunk)
                    yield from finished()
                if chunk:
                    self._run_chunk(loaded, chunk)
                yield from finished()
            finally:
                for *_, future in inflight:
                    future.cancel()

    def _run_chunk(
        self, loaded: LoadedModel, chunk: list[tuple[_Pending, int, torch.Tensor]]
    ) -> None:
        out = self._forward(loaded, torch.stack([t for _, _, t in chunk]))
        for (pending, i, _), row in zip(chunk, out, strict=True):
            if pending.features is None:
                pending.features = np.full((pending.size, out.shape[1]), np.nan, np.float32)
            pending.features[i] = row
            pending.resolved += 1
        chunk.clear()

    def _forward(self, loaded: LoadedModel, batch: torch.Tensor) -> np.ndarray:
        n = batch.shape[0]
        step = loaded.graph_batch or n
        parts = [_infer(loaded, batch[i : i + step], step) for i in range(0, n, step)]
        features = parts[0] if len(parts) == 1 else np.concatenate(parts)
        # Check every batch before it leaves: one row per input, one width, float32.
        if features.shape != (n, loaded.dim):
            raise RuntimeError(
                f"model output has shape {tuple(features.shape)}, expected ({n}, {loaded.dim})"
            )
        if self.config.normalize:  # unit rows; an all-zero row stays zero
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            features = features / np.maximum(norms, np.finfo(np.float32).tiny)
        return features

    def _result(self, pending: _Pending, loaded: LoadedModel) -> Features:
        if pending.features is not None:
            return pending.features
        # No row of this batch succeeded: NaN rows of the right width.
        return np.full((pending.size, loaded.dim), np.nan, np.float32)


def _infer(loaded: LoadedModel, batch: torch.Tensor, rows: int) -> np.ndarray:
    """The model's (n, D) output for a batch, run as `rows` rows (padded; the padding dropped)."""
    n = batch.shape[0]
    if n < rows:  # copies of the last image: the graph runs only at the size it was built for
        batch = torch.cat([batch, batch[-1:].expand(rows - n, -1, -1, -1)])
    batch = batch.contiguous(memory_format=torch.channels_last)
    if loaded.device.type == "cuda":
        batch = batch.pin_memory().to(loaded.device, non_blocking=True)
    return forward(loaded.module, batch, loaded.autocast_dtype)[:n].cpu().numpy()


def _model_input(tensor: object, chunk: list[tuple[_Pending, int, torch.Tensor]]) -> torch.Tensor:
    """A transform bug is a configuration error, not a bad image: say so clearly."""
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
        got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise TypeError(f"transform must return a float CHW image tensor, got {got}")
    if chunk and chunk[0][2].shape != tensor.shape:
        raise ValueError(
            f"transform returned tensors of different shapes, {tuple(chunk[0][2].shape)} and "
            f"{tuple(tensor.shape)}: it must crop or resize to a fixed size"
        )
    return tensor
