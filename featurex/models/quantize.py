"""int8 on the CPU: post-training static quantization for CNNs, dynamic quantization of the
Linear layers for transformers (where static quantization does not apply: attention's
matrix products take two activations).

Calibration is deterministic, so every worker builds the same quantized model and the same
image gets the same features on every executor: the same images (featurex's own six photos,
each whole and in two halves: 18 inputs, or the user's folder, sorted by name), in the same
order, through the model's own preprocessing. The quantized model is checked against fp32
on those images at load; where it fails the check, the caller runs fp32 instead.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .._types import Transform
from ..decode import DecodeError, decode_image

log = logging.getLogger(__name__)

# The photos shipped for calibration: six scikit-image sample photographs (public domain and
# CC0, as samples/ in the repository), at most 320 px.
CALIBRATION_DIR = Path(__file__).resolve().parent.parent / "_calibration"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# The quantized model must agree with fp32 this well on every calibration image (cosine);
# ResNet-50 reaches 0.9997 (measured).
MIN_COSINE = 0.98
_MAX_PIXELS = 89_478_485


def calibration_files(folder: str | None) -> list[Path]:
    """The calibration images, sorted by name: the user's folder or featurex's own."""
    root = Path(folder) if folder is not None else CALIBRATION_DIR
    return sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def calibration_batch(transform: Transform, folder: str | None) -> torch.Tensor:
    """Each calibration image whole and in two halves (left and right, or top and bottom),
    preprocessed: a varied, fixed batch. An unreadable file is skipped, with a warning."""
    tensors = []
    for path in calibration_files(folder):
        try:
            image = decode_image(path.read_bytes(), _MAX_PIXELS)
        except DecodeError as exc:
            log.warning("skipping calibration image %s: %s", path, exc)
            continue
        width, height = image.size
        halves = (
            [(0, 0, width // 2, height), (width // 2, 0, width, height)]
            if width >= height
            else [(0, 0, width, height // 2), (0, height // 2, width, height)]
        )
        for crop in [image, *(image.crop(box) for box in halves)]:
            tensors.append(transform(crop))
    if not tensors:
        raise ValueError(f"no calibration image could be read in {folder}")
    return torch.stack(tensors).contiguous(memory_format=torch.channels_last)


def is_transformer(module: nn.Module) -> bool:
    """Attention layers in the model: quantize its Linear layers dynamically."""
    return any(
        isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__
        for m in module.modules()
    )


def engine() -> str | None:
    """The x86 quantized engine this torch build has, or None (then int8 runs as fp32)."""
    engines = torch.backends.quantized.supported_engines
    return next((e for e in ("x86", "fbgemm") if e in engines), None)


def quantize(module: nn.Module, calibration: torch.Tensor) -> tuple[nn.Module, str]:
    """The int8 model and how it was quantized ("static" or "dynamic"). Raises on failure."""
    chosen = engine()
    if chosen is None:
        raise RuntimeError("this torch build has no x86 quantized engine")
    torch.backends.quantized.engine = chosen
    with warnings.catch_warnings():
        # torch.ao.quantization says it is deprecated in favour of torchao's pt2e flow, whose
        # x86 speed needs torch.compile (minutes per worker here): it is still the way in 2.14.
        warnings.simplefilter("ignore")
        return _quantize(module, calibration, chosen)


def _quantize(module: nn.Module, calibration: torch.Tensor, chosen: str) -> tuple[nn.Module, str]:
    if is_transformer(module):
        dynamic = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            module, {nn.Linear}, dtype=torch.qint8
        )
        return dynamic, "dynamic"
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    example = calibration[:1]
    prepared = prepare_fx(module, get_default_qconfig_mapping(chosen), example_inputs=(example,))
    with torch.inference_mode():
        for start in range(0, calibration.shape[0], 4):
            prepared(calibration[start : start + 4])
    return convert_fx(prepared), "static"


def agreement(got: torch.Tensor, want: torch.Tensor) -> float:
    """The smallest cosine similarity between matching rows."""
    cosine = nn.functional.cosine_similarity(got.float(), want.float(), dim=1)
    return float(cosine.min())


def check_folder(folder: str) -> str:
    """On the driver: a calibration folder must exist and hold images. Returns its abspath."""
    path = os.path.abspath(os.path.expanduser(folder))
    if not os.path.isdir(path):
        raise NotADirectoryError(path)
    if not calibration_files(path):
        raise FileNotFoundError(path)
    return path
