"""What it costs to feed one Spark task: Spark itself, featurex's row handling, reading,
decoding and the model, each measured apart, in one run.

    python -m benchmarks.feed                      # 1,024 benchmark JPEGs, one task at a time
    python -m benchmarks.feed --images 256 --rounds 2

One task slot (`local[1]`), so each figure is per task. Over the same images:

- no-op UDF: a scalar-iterator pandas UDF that returns a zero vector of 2,048 floats per row:
  what Spark, Arrow and the Python worker cost with nothing decoded and no model;
- featurex with a model that does nothing (a factory returning 2,048 zeros per image): the
  no-op UDF's cost, plus decoding and preprocessing, plus featurex's row handling (Arrow to
  Python, re-chunking, features back to Arrow), with the features returned as one Arrow
  array (Arrow UDFs, pyspark 4.1+) and, for comparison, through a pandas UDF (pyspark's
  per-row conversion: its path without Arrow UDFs);
- the engine alone, without Spark, on one thread, with the same model: decoding and
  preprocessing only;
- featurex with ResNet-50 (seeded random weights, fp32, `--model-images` images);
each over binaryFile's `content` (cached in memory) and over a path column (the worker reads
the files); then featurex with the do-nothing model over `s3://` paths on an S3 server on
127.0.0.1 that answers each request after `--latency` ms, with 1, 4, 16 and 64 reads in
flight; and featurex with the do-nothing model at several Arrow batch sizes
(`spark.sql.execution.arrow.maxRecordsPerBatch`). Each row is the median of `--rounds`
jobs after a warm-up job. Results go to benchmarks/results/feed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.images import make_images
from benchmarks.run import ROOT, machine

DIM = 2048


class _Nothing(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], DIM)


def nothing() -> torch.nn.Module:
    """A model that does nothing: what featurex costs around a model."""
    return _Nothing()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.feed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--images", type=int, default=1024)
    add("--model-images", type=int, default=128, help="images for the ResNet-50 rows")
    add("--rounds", type=int, default=3)
    add("--latency", type=float, default=50.0, help="the S3 server's delay per request, ms")
    add("--reads", default="1,4,16,64", help="reads in flight for the S3 rows")
    add("--arrow-batches", default="64,256,1024,4096", help="maxRecordsPerBatch values")
    add("--out", type=Path, default=ROOT / "benchmarks" / "results")
    add("--data", type=Path, default=ROOT / "benchmarks" / ".data")
    args = parser.parse_args(argv)
    args.read_list = [int(r) for r in args.reads.split(",") if r]
    args.arrow_list = [int(r) for r in args.arrow_batches.split(",") if r]
    if min(args.images, args.model_images, args.rounds) < 1:
        parser.error("--images, --model-images and --rounds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = make_images(args.images, args.data)
    files = sorted(str(p) for p in folder.glob("*.jpg"))
    from benchmarks.object_store import s3_server, upload

    # The server first: the Spark session's JVM, and its Python workers, inherit its endpoint.
    with s3_server(delay=0.0) as (_, requests):
        uris = upload({f"bench/{Path(f).name}": Path(f).read_bytes() for f in files})
        requests.delay = args.latency / 1e3
        results = _measure(args, files, uris)
    results["machine"] = {
        **machine(1),
        "command": shlex.join(["python", "-m", "benchmarks.feed", *(argv or sys.argv[1:])]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "feed.json").write_text(json.dumps(results, indent=1))
    (args.out / "feed.md").write_text(markdown(results))
    print(markdown(results), flush=True)
    return 0


def _measure(args: argparse.Namespace, files: list[str], uris: list[str]) -> dict[str, Any]:
    from pyspark.sql.functions import pandas_udf

    import featurex.spark as fx_spark
    from benchmarks.variants import session

    spark = session(1)
    conf = "spark.sql.execution.arrow.maxRecordsPerBatch"
    default_batch = int(spark.conf.get(conf))
    content = spark.read.format("binaryFile").load(files).select("path", "content").cache()
    paths = spark.createDataFrame([(f,) for f in files], "path string").cache()
    s3 = spark.createDataFrame([(u,) for u in uris], "path string").cache()
    for frame in (content, paths, s3):
        frame.count()

    @pandas_udf("array<float>")  # type: ignore[call-overload]
    def no_op(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        row = np.zeros(DIM, np.float32)
        for batch in batches:
            yield pd.Series([row] * len(batch))

    def featurex(column: str, model: Any = nothing, **options: Any) -> Any:
        return fx_spark.image_features(column, model=model, weights=None, device="cpu", **options)

    def through_pandas(column: str) -> Any:  # the UDF as pyspark without Arrow UDFs runs it
        arrow, fx_spark.has_arrow_udfs = fx_spark.has_arrow_udfs, lambda: False  # type: ignore[assignment]
        try:
            return featurex(column)
        finally:
            fx_spark.has_arrow_udfs = arrow  # type: ignore[assignment]

    rows: list[dict[str, Any]] = []

    def timed(name: str, frame: Any, column: Any, images: int, **extra: Any) -> None:
        # A subset cached apart: a limit in the timed job would end the job's Python worker
        # early (a reload per job), and the warm-up would not be the timed job.
        subset = frame.limit(images).cache() if images < len(files) else frame
        subset.count()
        job = subset.select(column.alias("f"))
        job.write.format("noop").mode("overwrite").save()  # warm-up: worker up, model loaded
        seconds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            job.write.format("noop").mode("overwrite").save()
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        if subset is not frame:
            subset.unpersist()
        rows.append({"row": name, "images": images, "seconds": seconds,
                     "images_per_s": images / median, "ms_per_image": 1e3 * median / images,
                     **extra})  # fmt: skip
        print(f"{name}: {images / median:.1f} images/s", flush=True)

    n, m = len(files), min(args.model_images, len(files))
    timed("no-op UDF, content", content, no_op("content"), n)
    timed("featurex, model doing nothing, content (Arrow out)", content, featurex("content"), n)
    timed(
        "featurex, model doing nothing, content (pandas out)", content, through_pandas("content"), n
    )
    timed("featurex ResNet-50 fp32, content", content, featurex("content", "resnet50"), m)
    timed("no-op UDF, path column", paths, no_op("path"), n)
    timed("featurex, model doing nothing, local paths", paths, featurex("path"), n)
    timed("featurex ResNet-50 fp32, local paths", paths, featurex("path", "resnet50"), m)
    for reads in args.read_list:
        count = min(n, max(64, 16 * reads))  # one read at a time takes 2 x latency per image
        timed(f"featurex, model doing nothing, s3 paths, {reads} reads in flight", s3,
              featurex("path", read_ahead=reads), count, reads=reads)  # fmt: skip
    for batch in args.arrow_list:
        spark.conf.set(conf, str(batch))
        timed(f"featurex, model doing nothing, content, Arrow batches of {batch}", content,
              featurex("content"), n, arrow_batch=batch)  # fmt: skip
    spark.conf.set(conf, str(default_batch))
    spark.stop()
    engine = _engine_alone(files, args.rounds)
    return {"rows": rows, "engine_alone": engine, "latency_ms": args.latency,
            "default_arrow_batch": default_batch}  # fmt: skip


def _engine_alone(files: list[str], rounds: int) -> dict[str, float]:
    """Decoding and preprocessing per image, without Spark: the engine with the do-nothing
    model over the bytes, on one thread (as a task with one core)."""
    import featurex as fx

    torch.set_num_threads(1)
    data = [Path(f).read_bytes() for f in files]
    engine = fx.FeatureExtractor(nothing, weights=None, device="cpu")
    engine.extract(data[:8])
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        batches = (data[i : i + 256] for i in range(0, len(data), 256))
        for _features in engine.extract_batches(batches):
            pass
        seconds.append(time.perf_counter() - start)
    return {"ms_per_image": 1e3 * statistics.median(seconds) / len(data)}


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    rows = {r["row"]: r for r in results["rows"]}
    lines = [
        f"# Feeding one task ({info['date']})",
        "",
        f"`{info['command']}` on {info['cpu']} ({os.cpu_count()} cores; one task slot, "
        f"`local[1]`), torch {info['torch']}, pyspark {info['pyspark']}. S3 rows: moto's "
        f"server on 127.0.0.1, {results['latency_ms']:.0f} ms per request. Median of the "
        f"timed jobs after a warm-up job.",
        "",
        "| row | images | images/s | ms per image |",
        "|---|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['row']} | {r['images']} | {r['images_per_s']:.1f} | {r['ms_per_image']:.2f} |"
        )
    decode = results["engine_alone"]["ms_per_image"]
    lines += [
        "",
        f"The engine alone (no Spark, one thread, the do-nothing model): {decode:.2f} ms "
        f"per image.",
    ]
    noop = rows.get("no-op UDF, content")
    arrow = rows.get("featurex, model doing nothing, content (Arrow out)")
    pandas_out = rows.get("featurex, model doing nothing, content (pandas out)")
    if noop and arrow and pandas_out:
        beyond = arrow["ms_per_image"] - noop["ms_per_image"] - decode
        lines += [
            "",
            f"Per image: Spark, Arrow and the Python worker {noop['ms_per_image']:.2f} ms (the "
            f"no-op UDF); decoding and preprocessing {decode:.2f} ms (the engine alone); "
            f"featurex's row handling beyond both {beyond:.2f} ms; features back through "
            f"pandas instead of one Arrow array: "
            f"{pandas_out['ms_per_image'] - arrow['ms_per_image']:+.2f} ms.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
