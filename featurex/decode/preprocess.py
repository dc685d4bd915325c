"""A model's preprocessing as data, and the one implementation of it on every path.

Each family describes its preprocessing once (`Preprocessing`: resize, interpolation, crop,
rescale, mean and std: what torchvision's `ImageClassification` preset, timm's and
open_clip's eval `Compose` and a Hugging Face image processor's config hold). Three paths are
made from that one description, so they cannot drift:

- the Pillow path (CPU): decoded RGB image -> resize -> crop, on uint8 pixels (`crop_image`);
- the tensor path: decoded uint8 CHW tensor, on the CPU or the GPU -> the same geometry with
  torch's antialiased resize (`crop_tensor`);
- both end in `normalize`: a whole batch of uint8 crops -> float, rescaled and normalized on
  the model's device, in one op per batch (not per image, and not in the decode threads).

`describe` reads the description off a transform where it can (the torchvision preset, a
`Compose` of the usual steps, or an object with a `preprocessing` attribute); a transform it
cannot read (a user's own `transform=`) gets None and runs as it is, on the CPU. The runtime
checks a description against the transform it was read from, at load (`agrees_with`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, cast

import numpy as np
import torch
from PIL import Image

from .._types import Transform

Interpolation = Literal["nearest", "bilinear", "bicubic"]
_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
# The steps of a Compose that leave an RGB PIL image as it is, or only turn it into a float
# tensor in [0, 1] (which `normalize` does for the whole batch instead).
_PASS_THROUGH = frozenset(
    {"ToTensor", "MaybeToTensor", "MaybeConvertMode", "_convert_to_rgb", "convert_to_rgb"}
)


@dataclass(frozen=True)
class Preprocessing:
    """Resize, center crop, rescale and normalize, as numbers.

    `resize` is the short side (aspect kept, the long side `int(resize * long / short)`, as
    torchvision and transformers compute it) or an exact (height, width). `crop` is a center
    crop (height, width), padded with zeros where the image is smaller. torchvision rounds the
    crop's offset to the nearest integer (Python's `round`), transformers floors it.
    `resampler` is how the Pillow path resizes: with Pillow (torchvision, timm, open_clip
    resize PIL images) or with torch's antialiased resize on uint8 tensors (transformers 5's
    processors). The GPU path always uses torch's.
    """

    resize: int | tuple[int, int] | None
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Interpolation = "bilinear"
    resampler: Literal["pil", "tensor"] = "pil"
    crop_rounding: Literal["round", "floor"] = "round"
    divisor: float = 255.0  # pixels / divisor: [0, 255] -> [0, 1]

    @property
    def resize_target(self) -> int | None:
        """The short side the resize makes, when it keeps the aspect (the elongation guard)."""
        return self.resize if isinstance(self.resize, int) else None

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) an image of this size is resized to."""
        if self.resize is None:
            return height, width
        if not isinstance(self.resize, int):
            return self.resize
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.resize * long / short)
        return (new_long, self.resize) if width <= height else (self.resize, new_long)

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int, int, int]:
        """(top, left, pad_top, pad_left, pad_bottom, pad_right) of the crop of an image of
        this size: padded first where it is smaller than the crop, as torchvision does."""
        if self.crop is None:
            return 0, 0, 0, 0, 0, 0
        crop_h, crop_w = self.crop
        pad_top, pad_bottom = _pads(crop_h, height)
        pad_left, pad_right = _pads(crop_w, width)
        height, width = height + pad_top + pad_bottom, width + pad_left + pad_right
        if self.crop_rounding == "round":
            top, left = round((height - crop_h) / 2.0), round((width - crop_w) / 2.0)
        else:
            top, left = int((height - crop_h) / 2.0), int((width - crop_w) / 2.0)
        return top, left, pad_top, pad_left, pad_bottom, pad_right


def _pads(crop: int, size: int) -> tuple[int, int]:
    return ((crop - size) // 2, (crop - size + 1) // 2) if crop > size else (0, 0)


def crop_image(image: Image.Image, pre: Preprocessing) -> torch.Tensor:
    """The Pillow path: an RGB image -> its resized, cropped uint8 (3, H, W) tensor."""
    if pre.resampler == "tensor":
        return crop_tensor(torch.from_numpy(np.array(image)).permute(2, 0, 1), pre)
    height, width = pre.resized(image.height, image.width)
    if (height, width) != (image.height, image.width):
        image = image.resize((width, height), _PIL_FILTERS[pre.interpolation])
    top, left, *pads = pre.crop_box(image.height, image.width)
    if any(pads):
        return crop_tensor(torch.from_numpy(np.array(image)).permute(2, 0, 1), pre, resize=False)
    if pre.crop is not None:
        crop_h, crop_w = pre.crop
        image = image.crop((left, top, left + crop_w, top + crop_h))
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def crop_tensor(
    pixels: torch.Tensor, pre: Preprocessing, resize: bool = True, exact: bool = True
) -> torch.Tensor:
    """The tensor path (CPU or GPU): a uint8 (3, H, W) tensor -> resized and cropped.

    `exact` keeps uint8 pixels, rounded as transformers' processors round them. Without it
    (the GPU path) the resize stays in float (clamped to 0-255 like Pillow's), with no rounding
    to 8 bits on the way, one axis at a time (`separable`) after a box step for a large
    downscale (`box_factors`): its taps per output value are bounded, and no shape exceeds the
    CUDA kernel's shared memory.
    """
    from torchvision.transforms.v2 import functional as F

    if resize:
        size = pre.resized(pixels.shape[-2], pixels.shape[-1])
        if exact:
            if size != tuple(pixels.shape[-2:]):
                pixels = F.resize(pixels, list(size), interpolation=_mode(pre), antialias=True)
        else:
            pixels = pixels.float()  # the one float copy of the image
            factors = box_factors(pixels.shape[-2:], size)
            if factors != (1, 1):
                pixels = torch.nn.functional.avg_pool2d(pixels[None], factors, ceil_mode=True)[0]
            for step in separable((pixels.shape[-2], pixels.shape[-1]), size):
                pixels = F.resize(pixels, list(step), interpolation=_mode(pre), antialias=True)
                if pre.interpolation == "bicubic":  # its overshoot, as Pillow's 8 bits clip it
                    pixels = pixels.clamp_(0, 255)
    if pre.crop is None:
        return pixels
    top, left, pad_top, pad_left, pad_bottom, pad_right = pre.crop_box(*pixels.shape[-2:])
    if pad_top or pad_left or pad_bottom or pad_right:
        pixels = torch.nn.functional.pad(pixels, (pad_left, pad_right, pad_top, pad_bottom))
    crop_h, crop_w = pre.crop
    return pixels[..., top : top + crop_h, left : left + crop_w]


# The GPU path's resize. CUDA's antialiased kernel is one 2-D pass over the whole window
# (`upsample_gen2d_aa_out_frame`): at a downscale factor s it reads about (2s)^2 taps per output
# value for bilinear and (4s)^2 for bicubic (3,000 for a 12 Mpx photo to 224 in bicubic), and
# its launcher refuses windows that need more than 48 KB of shared memory (32 floats per tap
# across, 33 down: a 30000x2000 panorama to 224x224 in bicubic). So it runs as Pillow resizes:
# one axis, then the other (`separable`: the same filter, since its weights are a product),
# each pass reading 2s or 4s taps along its axis and 3 or 5 across (weights 0, 1, 0 at scale
# 1). Past a factor of 2 * REDUCING_GAP, a box (area) reduction by an integer factor comes
# first, as Pillow's `reducing_gap` and JPEG draft mode do, so that no pass reads more than
# 67 taps along its axis (9 KB of shared memory). Against Pillow's features, for tiny CLIP
# and DINOv2 models at 36 px from 300-1,000 px photos (a factor of 8 to 28), the gap gave a
# minimum cosine of 0.99983 at 2, 0.99998 at 4, 0.99999 at 8 (0.999999 with no box step).
REDUCING_GAP = 8
_INTERP_SIZE = {"nearest": 1, "bilinear": 2, "bicubic": 4}  # PyTorch's filter widths


def separable(size: tuple[int, int], target: tuple[int, int]) -> list[tuple[int, int]]:
    """The sizes after each pass of a resize from `size` to `target`: the width first,
    then the height (as Pillow), skipping an axis that does not change."""
    (height, width), (new_h, new_w) = size, target
    steps = [(height, new_w)] if width != new_w else []
    return [*steps, (new_h, new_w)] if height != new_h else steps


def box_factors(size: Sequence[int], target: Sequence[int]) -> tuple[int, int]:
    """(rows, columns) to average into one before the antialiased resize to `target`; an
    axis that is enlarged, or shrunk by less than 2 * REDUCING_GAP, keeps factor 1."""
    rows, cols = (max(1, int(n) // (t * REDUCING_GAP)) for n, t in zip(size, target, strict=True))
    return rows, cols


def aa_window(size: int, target: int, interpolation: Interpolation) -> int:
    """The taps along one axis of PyTorch's antialiased resize from `size` to `target`
    (`interp_size / 2` times the scale, on each side, as its CUDA launcher computes it)."""
    scale = size / target
    support = _INTERP_SIZE[interpolation] / 2 * max(scale, 1.0)
    return 2 * math.ceil(support) + 1


def normalize(batch: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 (n, 3, H, W) crops -> the model's float input, on the batch's device.

    The same elementwise ops as torchvision's `convert_image_dtype` and `normalize`
    (divide, subtract, divide), so the Pillow path gives the presets' exact numbers.
    """
    mean, std = _per_channel(pre.mean, batch.device), _per_channel(pre.std, batch.device)
    return batch.to(torch.float32).div_(pre.divisor).sub_(mean).div_(std)


@lru_cache(maxsize=32)
def _per_channel(values: tuple[float, float, float], device: torch.device) -> torch.Tensor:
    """Made once per device: a tensor made from a list is copied from pageable memory, and
    on a GPU that copy waits for the batch still running (no overlap)."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


def _mode(pre: Preprocessing) -> Any:
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(pre.interpolation)


def describe(transform: object) -> Preprocessing | None:
    """The description of a transform, where it is one featurex can read; else None."""
    own = getattr(transform, "preprocessing", None)
    if isinstance(own, Preprocessing):
        return own
    name = type(transform).__name__
    if name == "ImageClassification":  # torchvision's preset (weights.transforms())
        return _from_preset(transform)
    steps = getattr(transform, "transforms", None)
    if name == "Compose" and isinstance(steps, list):
        return _from_compose(steps)
    return None


def _from_preset(preset: Any) -> Preprocessing | None:
    resize, crop = list(preset.resize_size), list(preset.crop_size)
    interpolation = _interpolation(preset.interpolation)
    if len(resize) != 1 or len(crop) != 1 or interpolation is None:
        return None
    if preset.antialias is False:  # only a tensor input would resize without it
        return None
    return Preprocessing(
        resize=int(resize[0]),
        crop=(int(crop[0]), int(crop[0])),
        mean=three_channels(preset.mean),
        std=three_channels(preset.std),
        interpolation=interpolation,
    )


def _from_compose(steps: Sequence[Any]) -> Preprocessing | None:
    """Resize? CenterCrop? (to-tensor and RGB steps) Normalize?: the eval transforms of
    timm, open_clip and most hand-written pipelines."""
    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    interpolation: Interpolation = "bilinear"
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    order = []
    for step in steps:
        name = getattr(step, "__name__", None) or type(step).__name__
        if name == "Resize":
            size = step.size
            found = _interpolation(step.interpolation)
            if step.max_size is not None or found is None or step.antialias is False:
                return None
            size = [size] if isinstance(size, int) else list(size)
            resize = int(size[0]) if len(size) == 1 else (int(size[0]), int(size[1]))
            interpolation = found
        elif name == "CenterCrop":
            size = list(step.size)
            crop = (int(size[0]), int(size[-1]))
        elif name == "Normalize":
            if getattr(step, "inplace", False):
                return None
            mean, std = three_channels(step.mean), three_channels(step.std)
        elif name not in _PASS_THROUGH:
            return None
        order.append(name)
    expected = [n for n in ("Resize", "CenterCrop") if n in order]
    if [n for n in order if n in ("Resize", "CenterCrop")] != expected:
        return None  # a crop before the resize
    if not any(n in order for n in ("ToTensor", "MaybeToTensor")):
        return None  # it does not end in a float tensor: not an input featurex knows
    if "Normalize" in order and order.index("Normalize") < max(
        order.index(n) for n in ("ToTensor", "MaybeToTensor") if n in order
    ):
        return None
    return Preprocessing(resize=resize, crop=crop, mean=mean, std=std, interpolation=interpolation)


def _interpolation(mode: object) -> Interpolation | None:
    value = getattr(mode, "value", mode)
    return cast(Interpolation, value) if value in _PIL_FILTERS else None


def three_channels(values: object) -> tuple[float, float, float]:
    """Per-channel values (a tensor, a sequence, or one value for all three) as floats."""
    items = [float(v) for v in torch.as_tensor(values).flatten().tolist()]
    if len(items) == 1:
        items *= 3
    if len(items) != 3:
        raise ValueError(f"expected 3 channel values, got {items}")
    return items[0], items[1], items[2]


def agrees_with(pre: Preprocessing, transform: Transform, tolerance: float = 1e-5) -> float | None:
    """None if the description's Pillow path gives what `transform` gives on a few test
    images (landscape, portrait, odd sizes); else the largest difference found."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for height, width in ((288, 320), (301, 257), (97, 131)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        want = transform(image)
        got = normalize(crop_image(image, pre)[None], pre)[0]
        if not isinstance(want, torch.Tensor) or want.shape != got.shape:
            return float("inf")
        worst = max(worst, float((want.float() - got).abs().max()))
    return None if worst <= tolerance else worst
