"""The interface every model family implements, and what families share.

A family turns a model name (and weights) into two things: on the driver a `Source`, small,
validated and picklable, which says exactly which weights to load; on a worker a `Built`: the
trunk, an `nn.Module` whose output is one feature row per image, and the preprocessing that
belongs to its weights. The runtime (`runtime.py`) does the rest for every family alike:
device, precision, graph optimization, checks.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, cast

import torch
from torch import nn

from .._types import ModelFactory, Transform
from ..errors import ConfigError, MissingDependencyError

# Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize(ImageNet), for weights that do not
# bring their own preprocessing (a checkpoint path, random init, a factory).
DEFAULT_RESIZE = 256
DEFAULT_CROP = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_SEED_LOCK = threading.Lock()


@dataclass(frozen=True)
class Source:
    """Which model and weights to build, as resolved on the driver. Small and picklable.

    `identity` names the weights for the worker cache key: a checkpoint's or folder's
    fingerprint, a resolved revision, a tag. Two configs with equal sources share one load.
    """

    family: str  # the registry name: "torchvision", "hf", "timm", "open_clip", "factory"
    model: str | ModelFactory  # the name within the family, or the factory
    weights: str | None  # "DEFAULT", a family's weights name or tag, a file path, or None
    identity: str
    revision: str | None = None  # the exact revision to load, where the family has them
    trust: bool = False  # a pickled full-model checkpoint may be unpickled


@dataclass
class Built:
    """A family's model on the CPU, in eval mode, ready for the runtime."""

    module: nn.Module  # (n, 3, H, W) -> n feature rows
    transform: Transform  # RGB PIL image -> (3, H, W) float tensor
    # Whether `optimize=None` traces it: only where tracing is known to be faithful and
    # measured to pay, and whether under bf16/fp16 autocast as well (a traced ViT ran slower
    # than eager there: DINOv2-S 0.87x, CLIP ViT-B/16 0.98x, CPU time per image, measured).
    optimize: bool = False
    optimize_reduced: bool = True
    # A module whose direct children the image path may not use (a text tower): the runtime
    # drops those it sees unused, then checks the output did not change.
    prunable: nn.Module | None = None
    # Rewrites the module in place before tracing, into the same function in a form oneDNN
    # Graph fuses; the runtime checks the graph against the module as built.
    trace_rewrite: Callable[[nn.Module], None] | None = None


@dataclass(frozen=True)
class WeightsStatus:
    """Whether a model's weights are on this machine, for `featurex info`."""

    weights: str  # what they are: "ResNet18_Weights.IMAGENET1K_V1", "org/repo@<commit>", ...
    cached: bool | None  # None: nothing to fetch (random init, a local file or folder)
    file: str | None  # where they are, or would be once fetched
    status: str  # one line for people


class ModelSpec(Protocol):
    """What the runtime reads from a config (`featurex.ExtractorConfig` is one)."""

    @property
    def source(self) -> Source: ...
    @property
    def seed(self) -> int: ...
    @property
    def transform(self) -> Transform | None: ...
    @property
    def device(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def optimize(self) -> bool | None: ...
    @property
    def batch_size(self) -> int | None: ...
    @property
    def calibration(self) -> str | None: ...
    @property
    def key(self) -> str: ...  # what identifies the loaded model (`ExtractorConfig.key`)
    def describe(self) -> dict[str, Any]: ...


class Family(Protocol):
    """One model family. Adding a family is one module implementing this, and one line in
    the registry (`featurex.models.FAMILIES`)."""

    name: str  # also the model prefix: "hf" for "hf:...", except torchvision's plain names
    extra: str | None  # the pip extra that brings its library

    def resolve(self, model: str | ModelFactory, weights: str | None, trust: bool) -> Source:
        """On the driver: validate, normalize and pin the weights; ConfigError if bad."""
        ...

    def build(self, source: Source, seed: int) -> Built:
        """On a worker: the model and its preprocessing, downloading weights if needed."""
        ...

    def weights_status(self, source: Source) -> WeightsStatus:
        """Whether the weights are on this machine, and where."""
        ...

    def fetch(self, source: Source) -> None:
        """Download the weights into the local cache now, or raise WeightsUnavailableError."""
        ...


def import_optional(module: str, family: str, extra: str) -> ModuleType:
    """Import a family's library, or fail on the driver with the pip command that adds it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"model family {family!r} needs the {module!r} package, which is not installed: "
            f'pip install "featurex[{extra}]"'
        ) from exc


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for one model build, then restore the caller's RNG state.

    Locked: two threads building models at once would otherwise interleave their draws.
    """
    with _SEED_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def default_transform() -> Transform:
    from torchvision.transforms._presets import ImageClassification

    preset = ImageClassification(
        crop_size=DEFAULT_CROP,
        resize_size=DEFAULT_RESIZE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    return cast(Transform, preset)


def local_status(weights: str | None) -> WeightsStatus | None:
    """The status of weights that need no download (random init, a local file), or None."""
    from .weights import looks_like_path

    if weights is None:
        return WeightsStatus("none", None, None, "random init")
    if looks_like_path(weights):
        return WeightsStatus(weights, None, weights, "local checkpoint")
    return None


def unknown_name(what: str, name: str, valid: list[str], prefix: str, listing: str) -> ConfigError:
    """The error for a name a family does not have, with the closest ones it has."""
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f"did you mean {', '.join(f'{prefix}{c}' for c in close)}? " if close else ""
    return ConfigError(f"unknown {what} {name!r}: {hint}(all: {listing})")
