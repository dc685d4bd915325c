"""The model layer: one module per family behind one interface (`base.Family`), weights and
checkpoints (`weights`), and the runtime every family shares (`runtime`). Pure PyTorch, no
Spark.

    registry.resolve(model, weights)  on the driver: a validated, pinned `Source`
    runtime.load_model(config)        on a worker: the model a process caches
"""

from . import quantize
from .base import Built, Family, Source
from .registry import FAMILIES, family, resolve
from .runtime import (
    LoadedModel,
    autocast_dtype,
    check_precision,
    default_batch_size,
    default_decode_threads,
    forward,
    gpu_ordinal,
    load_model,
    resolve_device,
    task_device,
    warn_once,
)
from .weights import read_checkpoint

__all__ = [
    "FAMILIES",
    "Built",
    "Family",
    "LoadedModel",
    "Source",
    "autocast_dtype",
    "check_precision",
    "default_batch_size",
    "default_decode_threads",
    "family",
    "forward",
    "gpu_ordinal",
    "load_model",
    "quantize",
    "read_checkpoint",
    "resolve",
    "resolve_device",
    "task_device",
    "warn_once",
]
