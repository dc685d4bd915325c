"""Reading weights: checkpoints, their fit to a model, fingerprints, and safe downloads.

Checkpoints are read without running code from the file: safetensors, or
`torch.load(weights_only=True)`; a pickled full model only when the user trusts the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import torch
from torch import nn

from .._words import opt
from ..errors import CheckpointError, first_line

log = logging.getLogger(__name__)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
_V = TypeVar("_V")


def looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(CHECKPOINT_SUFFIXES)


def file_version(path: str) -> str:
    """Path, size and mtime: a checkpoint rewritten in place gets a new cache key."""
    stat = os.stat(path)
    return f"{path}@{stat.st_size}:{stat.st_mtime_ns}"


def folder_version(path: str) -> str:
    """A folder's path and a digest of its files' names, sizes and mtimes (not contents:
    weights are gigabytes). A file replaced or added changes it."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            stat = os.stat(full)
            digest.update(
                f"{os.path.relpath(full, path)}:{stat.st_size}:{stat.st_mtime_ns};".encode()
            )
    return f"{path}@{digest.hexdigest()[:16]}"


def hub_cached(repo: str, names: tuple[str, ...], revision: str | None = None) -> str | None:
    """The path of the first of `names` that the Hugging Face cache holds for `repo`, or None
    (looks only: nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        path = try_to_load_from_cache(repo, name, revision=revision)
        if isinstance(path, str):  # not None, and not the "known missing" sentinel
            return path
    return None


@contextlib.contextmanager
def download_lock(what: str) -> Iterator[None]:
    """An inter-process lock for one download, so that the Python workers of a machine that
    start at once fetch a file once, one at a time, instead of racing on the same cache
    entry (huggingface_hub locks its own files; torch.hub and open_clip's URL downloads
    do not)."""
    from filelock import FileLock

    folder = os.path.join(tempfile.gettempdir(), "featurex-locks")
    os.makedirs(folder, exist_ok=True)
    name = hashlib.sha256(what.encode()).hexdigest()[:24]
    with FileLock(os.path.join(folder, f"{name}.lock")):
        yield


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
                f"{opt('trust_checkpoint', True)} if you trust where the file came from"
            ) from exc
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(_unreadable(path, exc)) from exc
    if trust and isinstance(obj, nn.Module):
        return obj
    return _as_state_dict(obj, path)


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A checkpoint that must be a state_dict (families that build their own architecture)."""
    state = read_checkpoint(path)
    assert not isinstance(state, nn.Module)  # only returned when trusted
    return state


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


def checkpoint_shapes(path: str, trust: bool) -> dict[str, tuple[int, ...]] | None:
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


def check_fit(
    module: nn.Module,
    shapes: Mapping[str, tuple[int, ...]],
    path: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Every model key present with its shape, no extra keys (the removed head aside)."""
    if ignore_prefixes:  # the head is removed, so any class count fits
        shapes = {k: v for k, v in shapes.items() if not k.startswith(ignore_prefixes)}
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


def load_state(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    path: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Load a state_dict strictly, except for keys of the removed classifier head."""
    check_fit(module, {k: tuple(v.shape) for k, v in state.items()}, path, ignore_prefixes)
    if ignore_prefixes:
        state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    module.load_state_dict(state)


def check_checkpoint_fits(
    build_meta: Callable[[], tuple[nn.Module, tuple[str, ...]]], path: str, trust: bool
) -> None:
    """On the driver: a checkpoint that cannot fit the model fails before any job runs.

    `build_meta()` builds the model on PyTorch's meta device (no memory, no init), so this
    costs milliseconds, and names the key prefixes of the head it removed. A model that
    cannot be built there is left to the worker's check.
    """
    shapes = checkpoint_shapes(path, trust)
    if shapes is None:
        return
    try:
        with torch.device("meta"):
            module, ignore_prefixes = build_meta()
    except Exception as exc:  # a factory that cannot build on meta: the worker checks
        log.debug("skipping the driver-side checkpoint check: %s", exc)
        return
    check_fit(module, shapes, path, ignore_prefixes)


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return f"[{shown}{more}]"
