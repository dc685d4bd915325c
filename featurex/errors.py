"""Exceptions raised by featurex. All derive from `FeatureXError`."""

from __future__ import annotations


class FeatureXError(Exception):
    """Base class for featurex errors."""


class ConfigError(FeatureXError, ValueError):
    """A bad argument, detected on the driver before any job runs."""


class WeightsUnavailableError(FeatureXError, RuntimeError):
    """Pretrained weights could not be downloaded (for example, no internet)."""


class CheckpointError(ConfigError):
    """A checkpoint that cannot be loaded into the chosen model (on the driver or a worker)."""


class MissingDependencyError(FeatureXError, ImportError):
    """An optional library featurex needs for what was asked is not installed; the message
    names the pip command."""


class ImageError(FeatureXError, ValueError):
    """An image that cannot be decoded; raised only with ``on_error="raise"``."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
