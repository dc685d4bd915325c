"""torchvision classifiers (plain model names): features are the input of the final nn.Linear."""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import re
from functools import lru_cache
from typing import Any, cast
from urllib.parse import urlparse

import torch
from torch import nn

from .._types import ModelFactory
from .._words import opt
from ..errors import ConfigError, WeightsUnavailableError, first_line
from .base import Built, Source, WeightsStatus, default_transform, local_status, seeded
from .weights import (
    CHECKPOINT_SUFFIXES,
    check_checkpoint_fits,
    download_lock,
    file_version,
    load_state,
    looks_like_path,
    read_checkpoint,
)

log = logging.getLogger(__name__)

# torchvision classifiers without a final nn.Linear: "input of the classifier" is not clean.
_NO_LINEAR_HEAD = frozenset({"squeezenet1_0", "squeezenet1_1"})


def supported_models() -> tuple[str, ...]:
    """torchvision classification models whose features are the classifier's input."""
    return tuple(catalog())


@lru_cache(maxsize=1)
def catalog() -> dict[str, list[str]]:
    """Each supported model's weights enum: its class name, then its member names.

    What the driver checks a config against. `import torchvision` takes 1.8 s (it imports
    torch._dynamo), so the catalog of an installed torchvision is kept in featurex's cache
    folder (`graph_cache.cache_dir`), named by its version, and the driver imports torchvision
    only to make it.
    """
    from importlib import metadata

    from . import graph_cache

    folder = graph_cache.cache_dir()
    path = None
    with contextlib.suppress(metadata.PackageNotFoundError):
        version = metadata.version("torchvision")
        if folder is not None:
            path = os.path.join(folder, f"torchvision-{version}-models.json")
    if path is not None:
        with contextlib.suppress(OSError, ValueError):
            with open(path) as file:
                found = json.load(file)
            if isinstance(found, dict) and found:
                return cast(dict[str, list[str]], found)
    import torchvision.models

    names = torchvision.models.list_models(module=torchvision.models)
    made = {}
    for name in names:
        if name in _NO_LINEAR_HEAD:
            continue
        enum_type = torchvision.models.get_model_weights(name)
        made[name] = [enum_type.__name__, *enum_type.__members__]
    if path is not None:
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            aside = f"{path}.{os.getpid()}"
            with open(aside, "w") as file:
                json.dump(made, file)
            os.replace(aside, path)
    return made


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
    with download_lock(path):
        if os.path.isfile(path):  # another worker fetched it while this one waited
            return
        log.info("downloading %s to %s", weights.url, path)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.hub.download_url_to_file(
                weights.url, path, hash_prefix=digest.group(1) if digest else None, progress=False
            )
        except Exception as exc:
            raise WeightsUnavailableError(
                f"cannot download {weights} for {model} from {weights.url} ({first_line(exc)}). "
                f"Offline? Pass {opt('weights', '/path/to/checkpoint.pth')} (a local "
                f"state_dict) or {opt('weights', None)} for random init"
            ) from exc


def strip_classifier(module: nn.Module) -> str:
    """Replace the last nn.Linear (the classifier) by Identity; return its name."""
    linears = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear classifier whose input could be the features")
    name: str = linears[-1][0]
    parent_name, _, attr = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, attr, nn.Identity())
    return name


def identity(weights: str | None) -> str:
    """The cache-key name of weights: a checkpoint's version, else the name itself."""
    if weights is not None and looks_like_path(weights):
        return file_version(weights)
    return repr(weights)


def full_model(loaded: nn.Module) -> Built:
    """A trusted pickled full model brings its own architecture; its classifier goes."""
    if any(isinstance(m, nn.Linear) for m in loaded.modules()):
        strip_classifier(loaded)
    return Built(loaded, default_transform())


class Torchvision:
    name: str = "torchvision"
    extra: str | None = None

    def resolve(self, model: str | ModelFactory, weights: str | None, trust: bool) -> Source:
        assert isinstance(model, str)
        valid = supported_models()
        if model not in valid:
            close = difflib.get_close_matches(model, valid, n=3)
            hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
            raise ConfigError(
                f"unknown model {model!r}: {hint}expected a torchvision classifier such as "
                f"'resnet18', 'resnet50' or 'efficientnet_b0' (all {len(valid)}: "
                f"featurex.models.torchvision.supported_models()), a family prefix "
                f"('hf:', 'timm:', 'open_clip:'), or a factory"
            )
        if weights is not None and looks_like_path(weights):
            check_checkpoint_fits(lambda: _meta_trunk(model), weights, trust)
        elif weights is not None:
            enum_name, *members = catalog()[model]
            names = ("DEFAULT", *(n for n in members if n != "DEFAULT"))
            # Accept "ResNet50_Weights.IMAGENET1K_V2", but only with this model's enum.
            prefix, _, short = weights.rpartition(".")
            if short not in names or prefix not in ("", enum_name):
                raise ConfigError(
                    f"unknown weights {weights!r} for {model}: expected one of "
                    f"{', '.join(map(repr, names))}, a checkpoint path "
                    f"({', '.join(CHECKPOINT_SUFFIXES)}), or {opt('weights', None)} for random "
                    f"init"
                )
            weights = short
        return Source(self.name, model, weights, identity(weights), trust=trust)

    def build(self, source: Source, seed: int) -> Built:
        import torchvision.models

        assert isinstance(source.model, str)
        builder = torchvision.models.get_model_builder(source.model)
        weights = source.weights
        if weights is not None and not looks_like_path(weights):
            enum = resolve_weights(source.model, weights)
            ensure_weights(source.model, enum)
            module = builder(weights=enum)
            strip_classifier(module)
            return Built(module, enum.transforms(), optimize=not source.trust)
        state = None
        if weights is not None:
            loaded = read_checkpoint(weights, source.trust)
            if isinstance(loaded, nn.Module):
                return full_model(loaded)
            state = loaded
        with seeded(seed):
            module = builder(weights=None)
        head = strip_classifier(module)
        if state is not None and weights is not None:
            load_state(module, state, weights, (head + ".",))
        return Built(module, default_transform(), optimize=not source.trust)

    def weights_status(self, source: Source) -> WeightsStatus:
        assert isinstance(source.model, str)
        local = local_status(source.weights)
        if local is not None:
            return local
        assert source.weights is not None
        weights = resolve_weights(source.model, source.weights)
        path = weights_file(weights)
        if os.path.isfile(path):
            return WeightsStatus(str(weights), True, path, f"cached at {path}")
        return WeightsStatus(
            str(weights), False, path, f"not cached (would download {weights.url})"
        )

    def fetch(self, source: Source) -> None:
        assert isinstance(source.model, str)
        if source.weights is not None and not looks_like_path(source.weights):
            ensure_weights(source.model, resolve_weights(source.model, source.weights))


def _meta_trunk(model: str) -> tuple[nn.Module, tuple[str, ...]]:
    import torchvision.models

    module = torchvision.models.get_model_builder(model)(weights=None)
    return module, (strip_classifier(module) + ".",)
