"""A user's zero-argument callable returning an nn.Module: features are what it returns."""

from __future__ import annotations

from torch import nn

from .._types import ModelFactory
from .._words import opt
from ..errors import ConfigError
from .base import Built, Source, WeightsStatus, default_transform, local_status, seeded
from .torchvision import full_model, identity
from .weights import check_checkpoint_fits, load_state, looks_like_path, read_checkpoint


class Factory:
    name: str = "factory"
    extra: str | None = None

    def resolve(self, model: str | ModelFactory, weights: str | None, trust: bool) -> Source:
        assert callable(model)
        if weights is not None and looks_like_path(weights):
            check_checkpoint_fits(lambda: (model(), ()), weights, trust)
        elif weights not in (None, "DEFAULT"):
            raise ConfigError(
                f"{opt('weights', weights)} is a torchvision weights name, but model is a "
                f"factory: pass a checkpoint path, or {opt('weights', None)} or 'DEFAULT' to keep "
                f"the factory's own weights"
            )
        return Source(self.name, model, weights, identity(weights), trust=trust)

    def build(self, source: Source, seed: int) -> Built:
        assert callable(source.model)
        state = None
        if source.weights is not None and looks_like_path(source.weights):
            loaded = read_checkpoint(source.weights, source.trust)
            if isinstance(loaded, nn.Module):
                return full_model(loaded)
            state = loaded
        with seeded(seed):
            module = source.model()
        if not isinstance(module, nn.Module):
            raise TypeError(f"model factory returned {type(module).__name__}, expected nn.Module")
        if state is not None and source.weights is not None:
            load_state(module, state, source.weights)
        # Tracing would fix the Python control flow of the user's forward(): opt-in only.
        return Built(module, default_transform(), optimize=False)

    def weights_status(self, source: Source) -> WeightsStatus:
        return local_status(source.weights) or WeightsStatus(
            "DEFAULT", None, None, "the factory's own"
        )

    def fetch(self, source: Source) -> None:
        return None
