"""Where a Spark job's time goes beyond the ceiling: a fixed cost per job and a cost per image.

    python -m benchmarks.costs                          # featurex int8 vs a no-op UDF
    python -m benchmarks.costs --precision fp32 --sizes 64,256 --rounds 5

In one warm session (`local[--cores]`, the Python workers started and the model loaded by a
warm-up job), jobs of each size in `--sizes` images (32 per partition, cached in memory, the
noop sink, median of `--rounds`) for two UDFs over the same `content` column:
- a no-op scalar-iterator pandas UDF that returns a zero vector of the same size per image:
  what Spark, Arrow and the Python worker cost with no decode and no model;
- featurex at `--precision` (ResNet-50, seeded random weights, as `benchmarks.run`).
A least-squares line `seconds = fixed + per_image * images` is fitted to each. Partitions
grow with the jobs, so each task's own cost counts in the cost per image. The featurex line's
cost per image is compared with `benchmarks.ceiling`'s bound, run first in a child process
(64 images, one pinned core). Figures go to
benchmarks/results/costs.json and costs.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.images import make_images
from benchmarks.run import ROOT, machine, run_ceiling
from benchmarks.variants import feature_column, load_images, session, warm_up

PER_PARTITION = 32
VARIANT = {"fp32": "featurex", "bf16": "featurex_bf16", "int8": "featurex_int8"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.costs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--precision", default="int8", choices=sorted(VARIANT))
    add("--model", default="resnet50")
    add("--sizes", default="64,128,256,512", help="images per job, multiples of 32")
    add("--rounds", type=int, default=3, help="timed jobs per size, their median")
    add("--cores", type=int, default=2)
    add("--out", type=Path, default=ROOT / "benchmarks" / "results")
    add("--data", type=Path, default=ROOT / "benchmarks" / ".data")
    args = parser.parse_args(argv)
    args.size_list = [int(s) for s in args.sizes.split(",") if s]
    if len(args.size_list) < 2 or any(s <= 0 or s % PER_PARTITION for s in args.size_list):
        parser.error(f"--sizes {args.sizes!r}: two or more positive multiples of {PER_PARTITION}")
    return args


def fit(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """(fixed seconds per job, seconds per image) of the least-squares line."""
    per_image, fixed = np.polyfit(np.array(sizes, float), np.array(seconds), 1)
    return float(fixed), float(per_image)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images = make_images(max(args.size_list), args.data)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    ceiling = run_ceiling(args.model, [args.precision], args.cores, 64, args.data,
                          args.out / "logs" / "costs-ceiling.log")[args.precision]  # fmt: skip
    bound_ms = 1e3 / ceiling["bound_images_per_s"]  # wall time per image on all the cores

    from pyspark.sql.functions import pandas_udf

    spark = session(args.cores)
    files, _ = load_images(spark, str(images), max(args.size_list) // PER_PARTITION)
    featurex = feature_column(spark, VARIANT[args.precision], args.model, None)
    dim = len(files.limit(1).select(featurex.alias("f")).first()["f"])  # type: ignore[index]

    @pandas_udf("array<float>")  # type: ignore[call-overload]
    def no_op(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        row = np.zeros(dim, np.float32)
        for batch in batches:
            yield pd.Series([row] * len(batch))

    columns = {"no-op UDF": no_op("content"), f"featurex {args.precision}": featurex}
    for column in columns.values():
        warm_up(files, column, args.cores)
    rows = []
    for name, column in columns.items():
        seconds = []
        for size in args.size_list:
            jobs = files.limit(size).repartition(size // PER_PARTITION).persist()
            jobs.count()
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                jobs.select(column.alias("f")).write.format("noop").mode("overwrite").save()
                times.append(time.perf_counter() - start)
            jobs.unpersist()
            seconds.append(statistics.median(times))
            print(f"{name}: {size} images in {seconds[-1]:.3f} s", flush=True)
        fixed, per_image = fit(args.size_list, seconds)
        rows.append({"udf": name, "sizes": args.size_list, "seconds": seconds,
                     "fixed_ms": fixed * 1e3, "per_image_ms": per_image * 1e3})  # fmt: skip
    spark.stop()
    command = shlex.join(
        ["python", "-m", "benchmarks.costs", *(sys.argv[1:] if argv is None else argv)]
    )
    info = {**machine(args.cores), "command": command,
            "precision": args.precision, "model": args.model, "rounds": args.rounds}  # fmt: skip
    results = {"machine": info, "ceiling": {**ceiling, "bound_ms_per_image": bound_ms},
               "rows": rows}  # fmt: skip
    (args.out / "costs.json").write_text(json.dumps(results, indent=1))
    (args.out / "costs.md").write_text(markdown(results))
    print(markdown(results), flush=True)
    return 0


def markdown(results: dict[str, Any]) -> str:
    info, ceiling = results["machine"], results["ceiling"]
    bound = ceiling["bound_ms_per_image"]
    lines = [
        "# Job costs: a fixed cost per job and a cost per image",
        "",
        f"`{info['command']}` on {info['date']}: {info['cpu']} ({info['cores_used']} cores), "
        f"{info['model']} at {info['precision']}, {PER_PARTITION} images per partition, "
        f"median of {info['rounds']} jobs per size.",
        "",
        f"Ceiling (one core, no Spark): decode {ceiling['decode_ms']:.1f} + forward "
        f"{ceiling['forward_ms']:.1f} ms per image, so {bound:.2f} ms of wall time per image "
        f"on {info['cores_used']} cores ({1e3 / bound:.1f} images/s).",
        "",
        "| UDF | "
        + " | ".join(f"{s} images (s)" for s in results["rows"][0]["sizes"])
        + " | fixed ms per job | ms per image | images/s at scale | share of the ceiling |",
        "|---|" + "---:|" * (len(results["rows"][0]["sizes"]) + 4),
    ]
    for row in results["rows"]:
        cells = " | ".join(f"{s:.3f}" for s in row["seconds"])
        rate = 1e3 / row["per_image_ms"]
        share = f"{bound / row['per_image_ms']:.0%}" if "featurex" in row["udf"] else "-"
        lines.append(
            f"| {row['udf']} | {cells} | {row['fixed_ms']:.0f} | {row['per_image_ms']:.2f} "
            f"| {rate:.1f} | {share} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
