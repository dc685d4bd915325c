"""The model families, told apart by the model's prefix: "hf:", "timm:", "open_clip:"; a plain
name is torchvision's, a callable is a factory. A new family is a module and one line here."""

from __future__ import annotations

import difflib
import re

from .._types import ModelFactory
from .._words import opt
from ..errors import ConfigError
from .base import Family, Source
from .factory import Factory
from .hf import HuggingFace
from .open_clip import OpenClip
from .timm import Timm
from .torchvision import Torchvision, supported_models

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
            raise ConfigError(f"{opt('model', model)} names no model after {prefix + ':'!r}")
        return FAMILIES[prefix].resolve(name, weights, trust)
    if colon and re.fullmatch(r"[A-Za-z][\w\-]*", prefix):
        raise _unknown_family(model, prefix, name)
    return FAMILIES["torchvision"].resolve(model, weights, trust)


def _unknown_family(model: str, prefix: str, name: str) -> ConfigError:
    """`tf:resnet50`: the prefix is no family; say which there are, and the likely one."""
    close = difflib.get_close_matches(prefix, PREFIXED, n=1)
    if close:
        hint = f": did you mean {f'{close[0]}:{name}'!r}?"
    elif name in supported_models():
        hint = f": did you mean {name!r}?"
    else:
        hint = ""
    families = ", ".join(f"'{p}:'" for p in PREFIXED[:-1]) + f" and '{PREFIXED[-1]}:'"
    return ConfigError(
        f"unknown model family {prefix + ':'!r} in {opt('model', model)}{hint} (the families "
        f"are {families}; a plain name is torchvision's)"
    )
