"""Types shared by the config, the model layer and decoding (a leaf module: no imports of ours)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch
    from PIL import Image

Precision = Literal["fp32", "bf16", "fp16", "int8"]
OnError = Literal["null", "raise"]
Decode = Literal["auto", "cpu", "gpu"]
ModelFactory = Callable[[], "torch.nn.Module"]
Transform = Callable[["Image.Image"], "torch.Tensor"]

PRECISIONS: tuple[str, ...] = get_args(Precision)
ON_ERRORS: tuple[str, ...] = get_args(OnError)
DECODES: tuple[str, ...] = get_args(Decode)
