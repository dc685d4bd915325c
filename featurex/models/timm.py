"""timm (`timm:<name>[.tag]`): features are the model's output with `num_classes=0`;
preprocessing is timm's `resolve_data_config` + `create_transform` in eval mode."""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from .._types import ModelFactory
from .._words import opt
from ..errors import ConfigError, WeightsUnavailableError, first_line
from .base import Built, Source, WeightsStatus, import_optional, local_status, seeded, unknown_name
from .torchvision import identity
from .weights import (
    check_checkpoint_fits,
    download_lock,
    hub_cached,
    load_state,
    looks_like_path,
    read_state_dict,
)


def _timm() -> Any:
    return import_optional("timm", "timm", "timm")


class Timm:
    name: str = "timm"
    extra: str | None = "timm"

    def resolve(self, model: str | ModelFactory, weights: str | None, trust: bool) -> Source:
        assert isinstance(model, str)
        timm = _timm()
        if not timm.is_model(model):
            listing = "timm.list_models(), with pretrained tags: timm.list_pretrained()"
            raise unknown_name("timm model", model, timm.list_models(), "timm:", listing)
        if weights is not None and looks_like_path(weights):
            check_checkpoint_fits(partial(_trunk_and_head, model), weights, trust)
        elif weights == "DEFAULT":
            name = _pretrained_name(model)
            if name is None:
                tags = timm.list_pretrained(f"{model.split('.')[0]}.*")
                hint = f" (its tags: {', '.join(tags[:5])})" if tags else ""
                raise ConfigError(
                    f"timm:{model} has no pretrained weights{hint}: pass a tag in the name "
                    f"(timm:<name>.<tag>), a checkpoint path, or {opt('weights', None)}"
                )
            model = name  # pinned to the tag timm picks today
        elif weights is not None:
            raise ConfigError(
                f"{opt('weights', weights)} for timm:{model}: expected 'DEFAULT' (timm's "
                f"pretrained weights for the name; pick a tag with timm:<name>.<tag>), a "
                f"checkpoint path (.pth/.pt/.safetensors), or {opt('weights', None)}"
            )
        return Source(self.name, model, weights, identity(weights))

    def build(self, source: Source, seed: int) -> Built:
        timm = _timm()
        assert isinstance(source.model, str)
        if source.weights == "DEFAULT":
            with download_lock(f"timm:{source.model}"):
                try:
                    module = _create(source.model, True)
                except Exception as exc:
                    raise WeightsUnavailableError(
                        f"cannot load timm's pretrained weights for {source.model} "
                        f"({first_line(exc)}). Offline? Set HF_HUB_OFFLINE=1 to use weights "
                        f"already in the Hugging Face cache, pass a local .safetensors/.pth "
                        f"state_dict, or {opt('weights', None)} for random init"
                    ) from exc
        else:
            with seeded(seed):
                module = _create(source.model, False)
            if source.weights is not None:
                state = read_state_dict(source.weights)
                head = _classifier_prefixes(module)
                load_state(module, state, source.weights, head)
        config = timm.data.resolve_data_config({}, model=module)
        transform = timm.data.create_transform(**config, is_training=False)
        # Traced in fp32 only: timm's ViTs behave as Hugging Face's (`Built`); its CNNs would
        # gain in bf16 too, as torchvision's do, but one rule per family keeps it predictable.
        return Built(module.eval(), transform, optimize=True, optimize_reduced=False)

    def weights_status(self, source: Source) -> WeightsStatus:
        assert isinstance(source.model, str)
        local = local_status(source.weights)
        if local is not None:
            return local
        hub_id = _timm().models.get_pretrained_cfg(source.model).hf_hub_id
        path = hub_cached(hub_id, ("model.safetensors", "pytorch_model.bin")) if hub_id else None
        if path is not None:
            return WeightsStatus(source.model, True, path, f"cached at {path}")
        where = f"the Hugging Face Hub's {hub_id}" if hub_id else "its URL"
        return WeightsStatus(source.model, False, None, f"not cached (would download {where})")

    def fetch(self, source: Source) -> None:
        if source.weights == "DEFAULT":
            self.build(source, 0)


def _create(name: str, pretrained: bool) -> nn.Module:
    module: nn.Module = _timm().create_model(name, pretrained=pretrained, num_classes=0)
    return module


def _trunk_and_head(name: str) -> tuple[nn.Module, tuple[str, ...]]:
    module = _create(name, False)
    return module, _classifier_prefixes(module)


def _pretrained_name(model: str) -> str | None:
    """`name.tag` for the weights timm loads for `model` by default, or None if it has none."""
    timm = _timm()
    cfg = timm.models.get_pretrained_cfg(model)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        return None
    arch = model.split(".")[0]
    return f"{arch}.{cfg.tag}" if cfg.tag else arch


def _classifier_prefixes(module: nn.Module) -> tuple[str, ...]:
    """The checkpoint's classifier keys, which num_classes=0 has no place for."""
    cfg: dict[str, Any] = getattr(module, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    model_keys = set(module.state_dict())
    return tuple(f"{n}." for n in names if not any(k.startswith(f"{n}.") for k in model_keys))
