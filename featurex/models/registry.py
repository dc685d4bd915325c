"""The model families, told apart by the model's prefix: "hf:", "timm:", "open_clip:"; a plain
name is torchvision's, a callable is a factory. A new family is a module and one line here."""

from __future__ import annotations

from .._types import ModelFactory
from ..errors import ConfigError
from .base import Family, Source
from .factory import Factory
from .hf import HuggingFace
from .open_clip import OpenClip
from .timm import Timm
from .torchvision import Torchvision

FAMILIES: dict[str, Family] = {
    f.name: f for f in (Torchvision(), Factory(), HuggingFace(), Timm(), OpenClip())
}
PREFIXED = ("hf", "timm", "open_clip")


def family(name: str) -> Family:
    return FAMILIES[name]


def resolve(model: str | ModelFactory, weights: str | None, trust: bool) -> Source:
    """On the driver: the family's validated, pinned `Source` for a model and its weights."""
    if callable(model):
        return FAMILIES["factory"].resolve(model, weights, trust)
    if not isinstance(model, str):
        raise ConfigError(
            f"model must be a torchvision model name or a zero-argument callable returning an "
            f"nn.Module, or a name with a family prefix ('hf:...', 'timm:...', "
            f"'open_clip:...'), got {model!r}"
        )
    prefix, colon, name = model.partition(":")
    if colon and prefix in PREFIXED:
        if not name:
            raise ConfigError(f"model={model!r} names no model after {prefix + ':'!r}")
        return FAMILIES[prefix].resolve(name, weights, trust)
    return FAMILIES["torchvision"].resolve(model, weights, trust)
