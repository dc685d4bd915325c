"""`featurex dedup FEATURES --output GROUPS`: near-duplicate groups of a Parquet of vectors.

Reads `featurex extract`'s output (path, features, error) or any Parquet with an id and a
vector column, writes GROUPS (<id>, group_id, is_representative: `fx.near_duplicates`) and
ends with one summary line: rows, groups, rows in groups of two or more, the recall measured
on a sample, the time. pyspark is imported only once the arguments are checked.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from ._compat import require_pyspark
from ._listing import plural
from ._words import FlagWords, speaking
from .errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

EXIT_OK, EXIT_FAILED = 0, 1
DEFAULT_SAMPLE = 1000

# How errors raised inside featurex.similar name its options on this command line.
WORDS = FlagWords(
    {
        "threshold": "--threshold",
        "features": "--features",
        "id": "--id",
        "representative": "--representative",
        "cells": "--cells",
        "probes": "--probes",
        "block_rows": "--block-rows",
        "sample": "--sample",
    },
    frozenset(),
    frozenset(),
)


def add_parser(commands: Any) -> None:
    """The `dedup` subcommand on `featurex`'s subparsers."""
    dedup = commands.add_parser(
        "dedup",
        help="group near-duplicate vectors of a Parquet (featurex extract's output)",
        description="Find the pairs of rows whose vectors' cosine is at or above --threshold "
        "and write their connected components: GROUPS has one row per input row with the id, "
        "group_id (the id of the group's representative) and is_representative. Rows "
        "without a usable vector have group_id null. The summary line gives the recall "
        "measured by exact search for --sample rows.",
    )
    dedup.add_argument("features_path", metavar="FEATURES", help="input Parquet (file or folder)")
    dedup.add_argument("--output", "-o", required=True, help="output Parquet folder (GROUPS)")
    dedup.add_argument(
        "--threshold", type=float, default=0.95, help="cosine threshold in (0, 1] (default 0.95)"
    )
    dedup.add_argument(
        "--features", default="features", help="the vector column (default: features)"
    )
    dedup.add_argument("--id", default="path", help="the unique id column (default: path)")
    dedup.add_argument(
        "--representative",
        default=None,
        metavar="COLUMN",
        help="the row with the largest value of COLUMN represents its group (ties: the "
        "smallest id); default: the smallest id",
    )
    dedup.add_argument(
        "--sample",
        type=int,
        default=DEFAULT_SAMPLE,
        metavar="N",
        help=f"rows searched exactly to measure recall (default {DEFAULT_SAMPLE}; 0: none)",
    )
    dedup.add_argument("--cells", type=int, default=None, metavar="N", help="k-means cells")
    dedup.add_argument("--probes", type=int, default=None, metavar="N", help="cells per row")
    dedup.add_argument(
        "--block-rows", type=int, default=4096, metavar="N", help="most rows of a block"
    )
    dedup.add_argument("--master", default="local[*]", help="Spark master (default: local[*])")
    dedup.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting, e.g. spark.driver.memory=8g (repeatable)",
    )
    dedup.add_argument("--overwrite", action="store_true", help="replace GROUPS if it exists")


def run(args: argparse.Namespace) -> int:
    with speaking(WORDS):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    launched = time.perf_counter()
    if not 0 < args.threshold <= 1:
        raise ConfigError(
            f"--threshold {args.threshold} is outside (0, 1]: pass a cosine similarity, "
            f"e.g. 0.95 for near-duplicates"
        )
    if args.sample < 0:
        raise ConfigError(f"--sample {args.sample}: pass 0 (no recall) or more rows")
    if not os.path.exists(args.features_path) and "://" not in args.features_path:
        raise ConfigError(f"FEATURES {args.features_path} does not exist")
    if os.path.exists(args.output) and not args.overwrite:
        raise ConfigError(f"--output {args.output} exists: pass --overwrite to replace it")
    conf = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--conf {item!r} is not KEY=VALUE")
        conf[key] = value
    require_pyspark("featurex dedup")
    from . import similar

    spark = _session(args.master, conf)
    table = spark.read.parquet(args.features_path)
    options = similar._Options(args.cells, args.probes, args.block_rows, None, None, 0)
    try:
        groups, pairs, stats = similar._near_duplicates(
            table, args.threshold, args.features, args.id, args.representative, options
        )
        groups.write.mode("overwrite" if args.overwrite else "errorifexists").parquet(args.output)
        recall = None
        if args.sample:
            base = similar._prepared(table, args.features, args.id, "table")
            recall = similar._recall(base, stats, pairs, args.threshold, args.sample, 0)
        written = spark.read.parquet(args.output)
        sizes = written.where("group_id is not null").groupBy("group_id").count()
        row = sizes.selectExpr(
            "count(*) as groups", "coalesce(sum(if(count > 1, count, 0)), 0) as grouped"
        ).first()
    except ConfigError:
        raise
    except Exception as exc:
        from .cli import _root_cause

        print(f"featurex: error: the job failed: {_root_cause(exc)}", file=sys.stderr)
        return EXIT_FAILED
    assert row is not None
    elapsed = time.perf_counter() - launched
    skipped = stats.missing + stats.unusable
    without = f", {skipped} without a usable vector (group_id null)" if skipped else ""
    if recall is None:
        measured = "recall not measured (--sample 0)"
    else:
        measured = (
            f"recall {recall.recall:.4f} ({recall.found} of {recall.expected} pairs of "
            f"{plural(recall.sample, 'sampled row', 'sampled rows')})"
        )
    print(
        f"featurex: {plural(stats.rows, 'row', 'rows')}, "
        f"{plural(row['groups'], 'group', 'groups')}, "
        f"{row['grouped']} rows in groups of two or more{without}, {measured}, "
        f"threshold {args.threshold}, {elapsed:.1f} s -> {args.output}"
    )
    return EXIT_OK


def _session(master: str, conf: dict[str, str]) -> SparkSession:
    from pyspark.sql import SparkSession

    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    defaults = {"spark.ui.showConsoleProgress": "false", "spark.log.level": "ERROR"}
    builder = SparkSession.builder.master(master).appName("featurex dedup")
    for key, value in {**defaults, **conf}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
