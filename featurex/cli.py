"""The `featurex` command: `featurex extract INPUT... --output OUT`.

Exit codes: 0 success; 1 the job failed; 2 a bad argument (one line, before Spark starts);
3 pretrained weights could not be downloaded (one line naming --weights PATH / none).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from . import __version__
from .config import PRECISIONS, ExtractorConfig
from .errors import ConfigError, WeightsUnavailableError, first_line

if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_WEIGHTS = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, not the whole usage block
        self.exit(EXIT_USAGE, f"featurex: error: {message} (see: featurex extract --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="featurex", description="Image feature vectors on Apache Spark.")
    parser.add_argument("--version", action="version", version=f"featurex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ex = commands.add_parser(
        "extract",
        help="extract features from image files into Parquet",
        description="Read images recursively with Spark's binaryFile source and write "
        "Parquet with columns path, features (array<float>) and error (string).",
    )
    ex.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    ex.add_argument("--output", "-o", required=True, help="output Parquet folder")
    ex.add_argument("--model", default="resnet50", help="torchvision model (default: resnet50)")
    ex.add_argument(
        "--weights",
        default="DEFAULT",
        help="torchvision weights name (DEFAULT, IMAGENET1K_V1, ...), a checkpoint PATH "
        "(.pth/.pt/.safetensors), or none for random init (default: DEFAULT)",
    )
    ex.add_argument("--batch-size", type=int, default=None, help="inference batch size")
    ex.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ex.add_argument("--precision", default="fp32", choices=PRECISIONS)
    ex.add_argument("--glob", default=None, help="only files whose name matches, e.g. '*.jpg'")
    ex.add_argument("--master", default="local[*]", help="Spark master (default: local[*])")
    ex.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    ex.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _extract(args)
    except ConfigError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except WeightsUnavailableError as exc:
        return _fail(EXIT_NO_WEIGHTS, str(exc))


def _fail(code: int, message: str) -> int:
    print(f"featurex: error: {message}", file=sys.stderr)
    return code


def _extract(args: argparse.Namespace) -> int:
    config = ExtractorConfig(
        model=args.model, weights=args.weights, batch_size=args.batch_size, device=args.device,
        precision=args.precision,
    )  # fmt: skip
    for path in args.inputs:
        if "://" not in path and not os.path.exists(path):
            raise ConfigError(f"input not found: {path!r}")
    output = args.output
    if "://" not in output and os.path.exists(output) and not args.overwrite:
        raise ConfigError(f"output {output!r} exists: pass --overwrite to replace it")
    if isinstance(config.model, str) and config.weights is not None and not config.checkpoint:
        # Fail now, in one line, rather than in every task of the job.
        from .models import ensure_weights, resolve_weights

        ensure_weights(config.model, resolve_weights(config.model, config.weights))

    spark = _session(args.master, config)
    try:
        return _run_job(spark, args, config)
    finally:
        spark.stop()


def _session(master: str, config: ExtractorConfig) -> SparkSession:
    from pyspark.sql import SparkSession

    if master.startswith("local"):
        # Workers must run this same interpreter, which has featurex and torch installed.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(master)
        .appName("featurex extract")
        .config("spark.ui.showConsoleProgress", "false")
        # The UDF re-chunks to batch_size itself; small Arrow batches keep worker memory low.
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "256")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _run_job(spark: SparkSession, args: argparse.Namespace, config: ExtractorConfig) -> int:
    from pyspark.sql import functions as F

    from .spark import features_column

    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    if args.glob:
        reader = reader.option("pathGlobFilter", args.glob)
    files = reader.load(args.inputs)
    total = files.count()  # lists files only: binaryFile skips content nobody selects
    if total == 0:
        return _fail(EXIT_USAGE, f"no files found in {' '.join(args.inputs)}")
    result = features_column("content", config, with_errors=True)
    out = files.select("path", result.alias("r")).select("path", "r.features", "r.error")

    progress = _Progress(spark.sparkContext, total, sys.stderr, enabled=not args.quiet)
    started = time.perf_counter()
    progress.start()
    try:
        out.write.mode("overwrite" if args.overwrite else "errorifexists").parquet(args.output)
    except Exception as exc:
        progress.stop()
        return _fail(EXIT_FAILED, f"the job failed: {_root_cause(exc)}")
    progress.stop()
    elapsed = time.perf_counter() - started

    written = spark.read.parquet(args.output)
    row = written.agg(F.count("*").alias("n"), F.count("error").alias("failed")).first()
    assert row is not None
    images, failed = int(row["n"]), int(row["failed"])
    print(
        f"featurex: {images} images, {failed} failed, {images / elapsed:.1f} images/s "
        f"({elapsed:.1f} s, {args.model}, {config.precision}) -> {os.path.abspath(args.output)}"
    )
    return EXIT_OK


def _root_cause(exc: BaseException) -> str:
    """The worker's own error line from a Spark failure, not Spark's wrapper around it."""
    lines = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception): .+)$", str(exc), re.M)
    return lines[-1] if lines else first_line(exc)


class _Progress:
    """Tasks done and an image estimate from Spark's status tracker, on stderr.

    On a terminal one line is redrawn in place; elsewhere (CI, logs) a line every 10 s.
    """

    def __init__(self, sc: SparkContext, total: int, stream: IO[str], enabled: bool) -> None:
        self._tracker = sc.statusTracker()
        self._total = total
        self._stream = stream
        self._enabled = enabled
        self._tty = stream.isatty()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="featurex-progress")
        self._started = time.perf_counter()

    def start(self) -> None:
        if self._enabled:
            self._started = time.perf_counter()
            self._thread.start()

    def stop(self) -> None:
        if self._enabled:
            self._done.set()
            self._thread.join()
            if self._tty:
                self._stream.write("\n")

    def _loop(self) -> None:
        interval = 0.5 if self._tty else 10.0
        while not self._done.wait(interval):
            line = self._line()
            if line and self._tty:
                self._stream.write(f"\r{line}\x1b[K")
            elif line:
                self._stream.write(f"{line}\n")
            self._stream.flush()

    def _line(self) -> str | None:
        done = tasks = 0
        for stage_id in self._tracker.getActiveStageIds():
            info = self._tracker.getStageInfo(stage_id)
            if info is not None:
                done += info.numCompletedTasks
                tasks += info.numTasks
        if tasks == 0:
            return None
        images = self._total * done // tasks
        elapsed = time.perf_counter() - self._started
        width = 24
        bar = "#" * (width * done // tasks)
        return (
            f"extract [{bar:<{width}}] {done}/{tasks} tasks, ~{images}/{self._total} images, "
            f"{images / elapsed:.1f} img/s, {elapsed:.0f} s"
        )
