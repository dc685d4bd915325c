"""One benchmark variant in a fresh process: its own SparkSession, Python workers and models.

    python -m benchmarks.variants VARIANT --images DIR --model resnet50 --repeats 3

prints one JSON line: images/s (the median of the timed runs, after a warm-up job that loads
the model in every worker, so start-up is excluded), model loads and peak RSS of the Python
workers, and writes the features of the first --subset images to --subset-out (.npy).
Every variant computes the same function: `model` with seeded random weights (seed 0),
classifier removed, Resize(256) -> CenterCrop(224) -> ToTensor -> ImageNet Normalize.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

BASELINES = ("eager", "row_udf", "series_udf", "predict_batch_udf")
FEATUREX = ("featurex", "featurex_bf16", "featurex_fast_decode", "featurex_eager_graph")
VARIANTS = BASELINES + FEATUREX

LOADS = 0  # model builds in this process (the baselines' own counter)
_MODELS: dict[str, torch.nn.Module] = {}


def build_model(name: str) -> torch.nn.Module:
    """The baselines' model, by hand: seeded random init, last Linear removed, eval."""
    import torchvision

    global LOADS
    LOADS += 1
    torch.manual_seed(0)
    net = torchvision.models.get_model(name, weights=None)
    last = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    parent, _, attr = last.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, attr, torch.nn.Identity())
    return net.eval()


def cached_model(name: str) -> torch.nn.Module:
    if name not in _MODELS:
        _MODELS[name] = build_model(name)
    return _MODELS[name]


def preprocess(data: bytes) -> torch.Tensor:
    from PIL import Image
    from torchvision import transforms as T

    image = Image.open(io.BytesIO(data)).convert("RGB")
    return T.Compose([
        T.Resize(256), T.CenterCrop(224), T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])(image)  # fmt: skip


def forward(model: torch.nn.Module, images: list[bytes]) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.stack([preprocess(b) for b in images])).numpy()


class CountedModel:
    """What the seed-style UDF broadcasts: a model whose unpickling counts as a load."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __setstate__(self, state: dict[str, Any]) -> None:
        global LOADS
        LOADS += 1
        self.__dict__.update(state)


def feature_column(spark: Any, variant: str, model: str, batch_size: int | None) -> Any:
    from pyspark.sql.functions import pandas_udf, udf
    from pyspark.sql.types import ArrayType, FloatType

    out_type = ArrayType(FloatType())
    if variant == "row_udf":  # the seed's workaround: broadcast the model, one image per call
        shared = spark.sparkContext.broadcast(CountedModel(build_model(model)))

        def one(content: bytes) -> list[float]:
            return forward(shared.value.model, [content])[0].tolist()

        return udf(one, out_type)("content")
    if variant == "series_udf":  # a plain Series -> Series pandas UDF, batches of 32

        def series(contents: pd.Series) -> pd.Series:
            net, items = cached_model(model), contents.tolist()
            out = [forward(net, items[i : i + 32]) for i in range(0, len(items), 32)]
            return pd.Series(list(np.concatenate(out)))

        return pandas_udf(series, out_type)("content")  # type: ignore[call-overload]
    if variant == "predict_batch_udf":
        from pyspark.ml.functions import predict_batch_udf

        def make_predict_fn() -> Callable[[np.ndarray], np.ndarray]:
            net = build_model(model)
            return lambda inputs: forward(net, [bytes(b) for b in inputs])

        return predict_batch_udf(make_predict_fn, return_type=out_type, batch_size=batch_size or 8)(
            "content"
        )
    import featurex as fx

    return fx.image_features(
        "content",
        model=model,
        weights=None,
        batch_size=batch_size,
        precision="bf16" if variant == "featurex_bf16" else "fp32",
        fast_decode=variant == "featurex_fast_decode",
        optimize=False if variant == "featurex_eager_graph" else None,
    )


def worker_report(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas: this Python worker's pid, model loads and peak RSS (VmHWM)."""
    import featurex as fx

    hwm = next(
        int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")
    )
    for batch in batches:
        row = {"pid": os.getpid(), "loads": LOADS + fx.cache_info()["loads"], "hwm_kb": hwm}
        yield pd.DataFrame({"report": [json.dumps(row)] * len(batch)})


def run_spark(args: argparse.Namespace) -> dict[str, Any]:
    from pyspark.sql import SparkSession

    # Workers run this interpreter and import this checkout (benchmarks.variants included).
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    spark = (
        SparkSession.builder.master(f"local[{args.cores}]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    files = spark.read.format("binaryFile").load(args.images)
    col = feature_column(spark, args.variant, args.model, args.batch_size)
    n = files.count()
    # Warm-up: one small task per core, so every Python worker has loaded its model.
    files.limit(2 * args.cores).repartition(args.cores).select(col).write.format("noop").mode(
        "overwrite"
    ).save()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        files.select(col.alias("f")).write.format("noop").mode("overwrite").save()
        times.append(time.perf_counter() - start)
    subset = files.orderBy("path").limit(args.subset).select("path", col.alias("f")).collect()
    reports = [json.loads(r["report"]) for r in spark.range(0, 16, 1, 16).mapInPandas(
        worker_report, "report string").collect()]  # fmt: skip
    per_pid = {r["pid"]: r for r in reports}
    spark.stop()
    np.save(args.subset_out, np.array([r["f"] for r in subset], dtype=np.float32))
    return {
        "images": n,
        "seconds": times,
        "images_per_s": n / statistics.median(times),
        "model_loads": sum(r["loads"] for r in per_pid.values()),
        "workers": len(per_pid),
        "peak_worker_rss_mb": max(r["hwm_kb"] for r in per_pid.values()) / 1024,
    }


def run_eager(args: argparse.Namespace) -> dict[str, Any]:
    """The ceiling without Spark: one process, all cores, decode then forward, best batch."""
    torch.set_num_threads(args.cores)
    paths = sorted(Path(args.images).glob("*.jpg"))
    data = [p.read_bytes() for p in paths]
    net = build_model(args.model).to(memory_format=torch.channels_last)
    best: dict[str, Any] = {}
    for batch in (4, 8):
        forward(net, data[:batch])  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for i in range(0, len(data), batch):
                forward(net, data[i : i + batch])
            times.append(time.perf_counter() - start)
        rate = len(data) / statistics.median(times)
        if rate > best.get("images_per_s", 0):
            best = {
                "images": len(data),
                "seconds": times,
                "images_per_s": rate,
                "batch_size": batch,
            }
    np.save(args.subset_out, forward(net, data[: args.subset]))
    hwm = next(
        int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")
    )
    return {**best, "model_loads": LOADS, "workers": 1, "peak_worker_rss_mb": hwm / 1024}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--images", required=True)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--subset", type=int, default=16)
    parser.add_argument("--subset-out", required=True)
    args = parser.parse_args(argv)
    result = run_eager(args) if args.variant == "eager" else run_spark(args)
    print(json.dumps({"variant": args.variant, "batch_size": args.batch_size, **result}))


if __name__ == "__main__":
    # Run the imported module, not __main__: the UDFs then pickle by reference and the
    # workers count loads in the same module-level LOADS that worker_report reads.
    from benchmarks.variants import main as imported_main

    sys.exit(imported_main())
