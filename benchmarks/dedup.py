"""Near-duplicate groups at scale: featurex's cells against Spark ML's LSH recipe.

    python -m benchmarks.dedup                      # 100k, 300k and 1M rows, D = 512
    python -m benchmarks.dedup --quick              # 5,000 rows, the peer at 5,000 (the suite's)
    python -m benchmarks.dedup --sizes 100000 --peer-max 100000

Vectors: skewed clusters (Zipf sizes, the largest holding about a third of the rows, some
tight), with planted near-duplicates: copies at cosine 0.96-0.99 of an anchor, and chains
A~B~C whose ends are at 0.92 (below the threshold, one group through B). Written to Parquet
(path, features array<float>) as `featurex extract` writes them, then read by Spark local[2].

Each row: the wall time of `near_duplicates` (pairs, components, the groups written to
Parquet), the recall measured by exact search of a sample of rows against the whole table
(`featurex.similar.pair_recall`'s method), the pairs, the groups and the driver's peak
memory (the Python driver's maximum RSS: what featurex collects lives there; the JVM, driver
and executors in one in local mode, is not counted). The peer is `BucketedRandomProjectionLSH`
+ `approxSimilarityJoin` at the distance of the threshold (sqrt(2 - 2 t) on unit vectors), at
each (bucketLength, numHashTables) given, with the same recall method, on the sizes up to
--peer-max, each cancelled after --peer-timeout seconds. Results: benchmarks/results/dedup.{json,md}
(--quick: dedup-quick.*).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .run import cpu_description

RESULTS = Path(__file__).parent / "results"
D = 512
THRESHOLD = 0.95


def vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """n rows: Zipf-sized clusters with planted copies and chains (float32, not unit)."""
    rng = np.random.default_rng(seed)
    clusters = max(2, int(math.sqrt(n) / 4))
    weights = 1 / np.arange(1, clusters + 1) ** 1.1
    weights /= weights.sum()
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    spread = rng.choice([0.45, 0.6, 0.75], size=clusters)  # cosine to the centre: some tight
    out = np.empty((n, dim), np.float32)
    i = 0
    while i < n:
        c = rng.choice(clusters, p=weights)
        anchor = _towards(centers[c], rng.normal(size=dim), spread[c])
        kind = rng.random()
        if kind < 0.1 and i + 3 <= n:  # a chain: anchor ~ middle ~ end, anchor !~ end
            end = _towards(anchor, rng.normal(size=dim), 0.92)
            out[i : i + 3] = [anchor, (anchor + end) / np.linalg.norm(anchor + end), end]
            i += 3
        elif kind < 0.3 and i + 2 <= n:  # copies
            copies = min(int(rng.integers(1, 4)), n - i - 1)
            out[i] = anchor
            for j in range(copies):
                out[i + 1 + j] = _towards(anchor, rng.normal(size=dim), rng.uniform(0.96, 0.99))
            i += 1 + copies
        else:
            out[i] = anchor
            i += 1
    return out * rng.uniform(0.5, 2, size=(n, 1)).astype(np.float32)


def _towards(u: np.ndarray, v: np.ndarray, cosine: float) -> np.ndarray:
    w = v - (v @ u) * u
    w /= np.linalg.norm(w)
    return np.asarray(cosine * u + math.sqrt(1 - cosine**2) * w, np.float32)


def write_table(path: Path, n: int, dim: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = vectors(n, dim, seed)
    ids = pa.array([f"img{i:08d}" for i in range(n)])
    with pq.ParquetWriter(
        path, pa.schema([("path", pa.string()), ("features", pa.list_(pa.float32()))])
    ) as writer:
        for s in range(0, n, 50_000):
            flat = pa.array(x[s : s + 50_000].ravel())
            lists = pa.ListArray.from_arrays(
                pa.array(np.arange(0, len(flat) + 1, dim, dtype=np.int32)), flat
            )
            writer.write_table(pa.table({"path": ids[s : s + 50_000], "features": lists}))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_featurex(spark: Any, table_path: Path, out: Path, sample: int) -> dict[str, Any]:
    from featurex import similar

    table = spark.read.parquet(str(table_path))
    options = similar._Options(None, None, 4096, None, None, 0)
    started = time.perf_counter()
    groups, pairs, stats = similar._near_duplicates(
        table, THRESHOLD, "features", "path", None, options
    )
    groups.write.mode("overwrite").parquet(str(out / "groups"))
    took = time.perf_counter() - started
    row = (
        spark.read.parquet(str(out / "groups")).selectExpr("count(distinct group_id) as g").first()
    )
    n_pairs = pairs.count()
    base = similar._prepared(table, "features", "path", "table")
    recall = similar._recall(base, stats, pairs, THRESHOLD, sample, 1)
    return {
        "tool": "featurex", "rows": stats.rows, "seconds": round(took, 1), "pairs": n_pairs,
        "groups": row["g"], "recall": round(recall.recall, 4),
        "recall_pairs": [recall.found, recall.expected], "driver_peak_mb": round(peak_mb()),
    }  # fmt: skip


def run_lsh(
    spark: Any, table_path: Path, out: Path, sample: int, bucket: float, tables: int, timeout: float
) -> dict[str, Any]:
    from pyspark.ml.feature import BucketedRandomProjectionLSH
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    from featurex import similar

    raw = spark.read.parquet(str(table_path))
    norm = F.sqrt(F.aggregate("features", F.lit(0.0), lambda a, x: a + x * x))
    unit = raw.select(
        "path", array_to_vector(F.transform("features", lambda x: x / norm)).alias("v")
    )
    lsh = BucketedRandomProjectionLSH(
        inputCol="v", outputCol="h", bucketLength=bucket, numHashTables=tables, seed=1
    )
    started = time.perf_counter()
    timer = threading.Timer(timeout, spark.sparkContext.cancelAllJobs)
    timer.start()
    try:
        model = lsh.fit(unit)
        joined = model.approxSimilarityJoin(unit, unit, math.sqrt(2 - 2 * THRESHOLD), "d")
        pairs = joined.select(
            F.col("datasetA.path").alias("a"), F.col("datasetB.path").alias("b")
        ).where("a < b")
        pairs.write.mode("overwrite").parquet(str(out / "lsh"))
    except Exception as exc:  # cancelled at the timeout
        return {"tool": f"spark-lsh bucketLength={bucket} numHashTables={tables}", "rows": None,
                "seconds": None, "error": str(exc).splitlines()[0][:200]}  # fmt: skip
    finally:
        timer.cancel()
    took = time.perf_counter() - started
    found = spark.read.parquet(str(out / "lsh"))
    table = spark.read.parquet(str(table_path))
    base = similar._prepared(table, "features", "path", "table")
    stats = similar._stats(base, "features", "path", "table")
    recall = similar._recall(base, stats, found, THRESHOLD, sample, 1)
    return {
        "tool": f"spark-lsh bucketLength={bucket} numHashTables={tables}", "rows": stats.rows,
        "seconds": round(took, 1), "pairs": found.count(), "groups": None,
        "recall": round(recall.recall, 4), "recall_pairs": [recall.found, recall.expected],
        "driver_peak_mb": round(peak_mb()),
    }  # fmt: skip


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Near-duplicates: `{results['command']}`",
        "",
        f"{results['machine']}; D = {D}, threshold {THRESHOLD}, local[2]; recall by exact "
        f"search of {results['sample']} sampled rows against the whole table.",
        "",
        "| tool | rows | time (s) | recall | pairs | groups | driver peak (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        cells = [r["tool"], r.get("rows"), r.get("seconds"), r.get("recall"), r.get("pairs"),
                 r.get("groups"), r.get("driver_peak_mb")]  # fmt: skip
        text = ["-" if c is None else str(c) for c in cells]
        if r.get("error"):
            text[2] = f"not finished: {r['error']}"
        lines.append("| " + " | ".join(text) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dedup")
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--quick", action="store_true", help="5,000 rows, the suite's smoke")
    parser.add_argument("--sample", type=int, default=1000, help="rows searched exactly")
    parser.add_argument("--peer-max", type=int, default=100_000, help="largest size for LSH")
    parser.add_argument("--peer-timeout", type=float, default=600.0)
    parser.add_argument("--lsh", default="0.05:3,0.02:6", help="bucketLength:numHashTables,...")
    args = parser.parse_args(argv)
    sizes = [5000] if args.quick else [int(s) for s in args.sizes.split(",")]
    peer_max = 5000 if args.quick else args.peer_max
    settings = [(float(b), int(t)) for b, t in (s.split(":") for s in args.lsh.split(","))]

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]").appName("benchmarks.dedup")
        .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "6g").config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )  # fmt: skip
    spark.sparkContext.setLogLevel("ERROR")
    cpu, flags = cpu_description()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            table = Path(tmp) / f"table-{n}.parquet"
            write_table(table, n, D, seed=n)
            rows.append(run_featurex(spark, table, Path(tmp), args.sample))
            print(json.dumps(rows[-1]), flush=True)
            if n <= peer_max:
                for bucket, tables in settings:
                    rows.append(
                        run_lsh(
                            spark, table, Path(tmp), args.sample, bucket, tables, args.peer_timeout
                        )
                    )
                    print(json.dumps(rows[-1]), flush=True)
    spark.stop()
    command = (
        "python -m benchmarks.dedup"
        + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    )
    results = {
        "command": command.strip(),
        "machine": f"{cpu} ({', '.join(flags)}), {os.cpu_count()} cores",
        "sample": args.sample, "date": time.strftime("%Y-%m-%d"), "rows": rows,
    }  # fmt: skip
    name = "dedup-quick" if args.quick else "dedup"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
