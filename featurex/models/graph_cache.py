"""The optimized CPU graph on local disk, so that a second worker or a second run loads it.

A worker's model load is the family's build (for torchvision, `import torchvision` alone is
1.8 s: it imports torch._dynamo), an eager reference forward, the trace and the freeze. A
cached entry skips all of these: it holds the frozen TorchScript graph, the preprocessing as
data, and the check, an example batch with the eager model's output for it. A hit runs the
oneDNN fusion on the example (as a fresh build does) and compares with the stored output at
the same tolerance, so a stale or corrupt entry fails like a bad trace would, and is built
again and replaced; it is never trusted on its name alone.

The name is a digest of everything that makes the graph: the config's key (model, weights'
identity, seed, precision, batch size, ...), the versions of featurex, torch and the family
libraries, and the CPU's instruction sets. Only what that key pins down is cached: a named
family model on the CPU whose preprocessing featurex reads as data, not a factory (its code
may read files the key does not see). int8's entry is its quantized model, traced and frozen
(quantizing and calibrating took 8.5 s for ResNet-50), checked by running it on the example
(its numbers are deterministic: to 1e-5). `FEATUREX_CACHE_DIR` moves the cache
(default `$XDG_CACHE_HOME/featurex`, else `~/.cache/featurex`); an empty value turns it off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, cast

import torch
from torch import nn

from ..decode.preprocess import Preprocessing, crop_image, normalize
from ..errors import first_line
from .base import ModelSpec

log = logging.getLogger(__name__)
FORMAT = 1  # bumped when the entry's layout or its meaning changes
MAX_ENTRIES = 8  # least recently used beyond this are removed: ResNet-50's is ~100 MB
_LIBRARIES = ("featurex", "torch", "torchvision", "transformers", "timm", "open_clip_torch")


def cache_dir() -> str | None:
    """Where entries live, or None where the cache is turned off."""
    value = os.environ.get("FEATUREX_CACHE_DIR")
    if value is not None:
        return value or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "featurex")


@dataclass(frozen=True)
class Entry:
    """What a hit gives back: the graph, and what the runtime would otherwise compute."""

    graph: nn.Module
    example: torch.Tensor  # two preprocessed images, as `runtime._example_batch` makes them
    want: torch.Tensor  # the eager model's output for the example at the graph's batch size
    dim: int
    graph_batch: int | None  # None: int8's traced quantized model, which runs at any size
    preprocessing: Preprocessing


class Described:
    """A model's transform rebuilt from its description: what a hit runs in place of the
    family's transform object, which would need the family's library to build."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing

    def __call__(self, image: Any) -> torch.Tensor:
        return normalize(crop_image(image, self.preprocessing)[None], self.preprocessing)[0]


def _versions() -> list[str]:
    found = []
    for name in _LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name}={metadata.version(name)}")
    return found


def entry_name(config: ModelSpec, dtype: torch.dtype | None) -> str | None:
    """The entry's file-system name for a config, or None where it is not cached."""
    if cache_dir() is None or config.source.family == "factory":
        return None
    from .runtime import cpu_features

    material = [f"format={FORMAT}", config.key, f"dtype={dtype}", *_versions(), *cpu_features()]
    return hashlib.sha256("\n".join(material).encode()).hexdigest()[:32]


def load(name: str) -> Entry | None:
    """The entry, or None where there is none or it cannot be read (the caller builds)."""
    folder = os.path.join(cast(str, cache_dir()), name)
    if not os.path.isdir(folder):
        return None
    try:
        with open(os.path.join(folder, "meta.json")) as file:
            meta = json.load(file)
        check = torch.load(os.path.join(folder, "check.pt"), weights_only=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation warning
            graph = torch.jit.load(os.path.join(folder, "graph.pt"), map_location="cpu")  # type: ignore[no-untyped-call]
        pre = Preprocessing(**{k: _tuples(v) for k, v in meta["preprocessing"].items()})
        batch = meta["graph_batch"]
        entry = Entry(
            graph, check["example"], check["want"], int(meta["dim"]),
            None if batch is None else int(batch), pre,
        )  # fmt: skip
    except Exception as exc:  # truncated, corrupt, or from another layout: build again
        log.warning(
            "featurex's cached graph %s cannot be read (%s): rebuilding", folder, first_line(exc)
        )
        discard(name)
        return None
    with contextlib.suppress(OSError):
        os.utime(folder)  # recently used
    return entry


def store(name: str, entry: Entry) -> None:
    """Write an entry, atomically: a folder written aside, then renamed into place."""
    root = cast(str, cache_dir())
    final = os.path.join(root, name)
    try:
        os.makedirs(root, exist_ok=True)
        work = tempfile.mkdtemp(prefix=f".{name}-", dir=root)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.jit.save(entry.graph, os.path.join(work, "graph.pt"))
            torch.save(
                {"example": entry.example, "want": entry.want}, os.path.join(work, "check.pt")
            )
            meta = {
                "dim": entry.dim,
                "graph_batch": entry.graph_batch,
                "preprocessing": dataclasses.asdict(entry.preprocessing),
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            with open(os.path.join(work, "meta.json"), "w") as file:
                json.dump(meta, file)
            os.rename(work, final)  # fails where another worker has just written it: fine
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _evict(root)
    except Exception as exc:  # a full or read-only disk costs the next load, nothing else
        log.info("featurex could not cache the optimized graph in %s (%s)", root, first_line(exc))


def summary() -> dict[str, Any]:
    """Where the cache is and what it holds, for `featurex info`."""
    root = cache_dir()
    if root is None:
        return {"path": None, "graphs": 0, "bytes": 0}
    graphs, size = 0, 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            if entry.is_dir() and not entry.name.startswith("."):
                graphs += 1
                size += sum(f.stat().st_size for f in os.scandir(entry.path) if f.is_file())
    return {"path": root, "graphs": graphs, "bytes": size}


def discard(name: str) -> None:
    """Remove an entry that failed its check."""
    shutil.rmtree(os.path.join(cast(str, cache_dir()), name), ignore_errors=True)


def _evict(root: str) -> None:
    """Keep the most recently used entries, and drop what a killed writer left behind."""
    now = time.time()
    for aside in os.scandir(root):
        if aside.name.startswith(".") and now - aside.stat().st_mtime > 3600:
            shutil.rmtree(aside.path, ignore_errors=True)
    entries = [e for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")]
    entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    for old in entries[MAX_ENTRIES:]:
        shutil.rmtree(old.path, ignore_errors=True)


def _tuples(value: Any) -> Any:
    """JSON's lists back to the tuples `Preprocessing` holds."""
    return tuple(value) if isinstance(value, list) else value
