"""open_clip (`open_clip:<arch>`): features are `encode_image`; preprocessing is open_clip's own
eval transform.

`weights` is a pretrained tag (`open_clip.list_pretrained_tags_by_model(arch)`), "DEFAULT"
(the first of those tags, open_clip's own order: "openai" for ViT-B-32), a local checkpoint,
or None (a seeded random init).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._types import ModelFactory
from .._words import opt
from ..errors import ConfigError, WeightsUnavailableError, first_line
from .base import Built, Source, WeightsStatus, import_optional, local_status, seeded, unknown_name
from .torchvision import identity
from .weights import check_checkpoint_fits, download_lock, hub_cached, looks_like_path


def _open_clip() -> Any:
    return import_optional("open_clip", "open_clip", "open_clip")


class OpenClip:
    name: str = "open_clip"
    extra: str | None = "open_clip"

    def resolve(self, model: str | ModelFactory, weights: str | None, trust: bool) -> Source:
        assert isinstance(model, str)
        open_clip = _open_clip()
        archs = open_clip.list_models()
        if model not in archs:
            listing = "open_clip.list_models()"
            raise unknown_name("open_clip architecture", model, archs, "open_clip:", listing)
        tags = open_clip.list_pretrained_tags_by_model(model)
        if weights is not None and looks_like_path(weights):
            check_checkpoint_fits(lambda: (_create(model, None)[0], ()), weights, trust)
        elif weights == "DEFAULT":
            if not tags:
                raise ConfigError(
                    f"open_clip:{model} has no pretrained tags: pass a checkpoint path or "
                    f"{opt('weights', None)}"
                )
            weights = tags[0]
        elif weights is not None and weights not in tags:
            raise ConfigError(
                f"unknown pretrained tag {weights!r} for open_clip:{model}: expected one of "
                f"{', '.join(map(repr, tags)) or '(none)'}, 'DEFAULT' (the first), a checkpoint "
                f"path, or {opt('weights', None)}"
            )
        return Source(self.name, model, weights, identity(weights))

    def build(self, source: Source, seed: int) -> Built:
        assert isinstance(source.model, str)
        if source.weights is None:
            with seeded(seed):
                model, transform = _create(source.model, None)
        elif looks_like_path(source.weights):
            # open_clip reads it: safetensors, or torch.load(weights_only=True).
            model, transform = _create(source.model, source.weights)
        else:
            with download_lock(f"open_clip:{source.model}:{source.weights}"):
                try:
                    model, transform = _create(source.model, source.weights)
                except Exception as exc:
                    raise WeightsUnavailableError(
                        f"cannot load open_clip's {source.weights!r} weights for "
                        f"{source.model} ({first_line(exc)}). Offline? Set HF_HUB_OFFLINE=1 "
                        f"to use weights in the Hugging Face cache, pass a local checkpoint, "
                        f"or {opt('weights', None)} for random init"
                    ) from exc
        encoder = ImageEncoder(model)  # traced in fp32 only, as Hugging Face's ViTs (`Built`)
        return Built(encoder, transform, optimize=True, optimize_reduced=False, prunable=model)

    def weights_status(self, source: Source) -> WeightsStatus:
        assert isinstance(source.model, str)
        local = local_status(source.weights)
        if local is not None:
            return local
        assert source.weights is not None
        cfg = _open_clip().get_pretrained_cfg(source.model, source.weights)
        hub = (cfg.get("hf_hub") or "").strip("/")
        if hub:
            repo = "/".join(hub.split("/")[:2])  # "timm/vit_base_patch32_clip_224.openai"
            path = hub_cached(repo, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
            if path is not None:
                return WeightsStatus(source.weights, True, path, f"cached at {path}")
        where = f"the Hugging Face Hub's {hub}" if hub else cfg.get("url")
        return WeightsStatus(source.weights, False, None, f"not cached (would download {where})")

    def fetch(self, source: Source) -> None:
        if source.weights is not None and not looks_like_path(source.weights):
            self.build(source, 0)


class ImageEncoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.encode_image(images)  # type: ignore[operator]
        return out


def _create(arch: str, pretrained: str | None) -> tuple[nn.Module, Any]:
    model, _, transform = _open_clip().create_model_and_transforms(arch, pretrained=pretrained)
    return model.eval(), transform
