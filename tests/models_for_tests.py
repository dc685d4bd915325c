"""Reference computations and small models used by the tests."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms as T


def reference_features(images: Sequence[bytes], model: str = "resnet18", seed: int = 0,
                       state_dict: dict[str, torch.Tensor] | None = None) -> np.ndarray:  # fmt: skip
    """Plain torchvision, by hand: the documented preprocessing and the pooled features."""
    torch.manual_seed(seed)
    net = torchvision.models.get_model(model, weights=None)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    net.fc = nn.Identity()
    net.eval()
    preprocess = T.Compose([
        T.Resize(256), T.CenterCrop(224), T.ToTensor(),
        T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])  # fmt: skip
    batch = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
    with torch.no_grad():
        return net(batch).numpy()


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4) -> None:
    """Each row within `rtol` of the reference, relative to the row's norm."""
    assert actual.shape == expected.shape
    assert actual.dtype == np.float32
    err = np.linalg.norm(actual - expected, axis=1) / np.linalg.norm(expected, axis=1)
    assert err.max() <= rtol, f"max relative error {err.max():.2e} > {rtol:.0e}"


class BatchProbe(nn.Module):
    """Outputs, for every row, the size of the batch it was run in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1), float(x.shape[0]))


def batch_probe() -> nn.Module:
    return BatchProbe()


def tiny_cnn() -> nn.Module:
    """A small picklable factory model: 8 features."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten())  # fmt: skip


def worker_cache_report(
    config: object,
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """For mapInPandas: this Python worker's pid, its cache statistics for `config`, and the
    objects the garbage collector walks (`tracked`) or has been told to skip (`frozen`)."""

    def report(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import gc

        import featurex

        heap = {"tracked": len(gc.get_objects()), "frozen": gc.get_freeze_count()}
        for batch in batches:
            line = json.dumps({"pid": os.getpid(), **featurex.cache_info(config), **heap})
            yield pd.DataFrame({"report": [line] * len(batch)})

    return report


def tiny_engine(**overrides: object) -> dict[str, object]:
    """FeatureExtractor / image_features arguments for a cheap real engine: tiny_cnn on
    32x32 crops (resized to 36 first, as torchvision's presets do). Decoding is unchanged."""
    from torchvision.transforms._presets import ImageClassification

    transform = ImageClassification(crop_size=32, resize_size=36)
    return {"model": tiny_cnn, "weights": None, "device": "cpu", "batch_size": 4,
            "transform": transform, **overrides}  # fmt: skip


@dataclass(frozen=True)
class LoggedBuild:
    """A tiny_cnn factory that appends the Spark partition of each build to the file `log`."""

    log: str

    def __call__(self) -> nn.Module:
        from pyspark import TaskContext

        context = TaskContext.get()
        with open(self.log, "a") as f:
            f.write(f"{context.partitionId() if context is not None else -1}\n")
        return tiny_cnn()

    def builds(self) -> list[int]:
        """The partitions whose tasks built the model, in order."""
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [int(line) for line in f]


def library_versions() -> dict[str, str]:
    """The versions of pyspark and the libraries its Arrow path uses, in this process."""
    import pyarrow
    import pyspark

    return {"pyspark": pyspark.__version__, "numpy": np.__version__, "pandas": pd.__version__,
            "pyarrow": pyarrow.__version__}  # fmt: skip
