"""The `featurex` command: `featurex extract INPUT... --output OUT` and `featurex info`.

Exit codes: 0 success; 1 the job failed; 2 a bad argument (one line, before Spark starts);
3 pretrained weights could not be downloaded (one line naming --weights PATH / none).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlparse

from . import __version__
from ._compat import require_pyspark
from .config import PRECISIONS, ExtractorConfig
from .errors import ConfigError, MissingDependencyError, WeightsUnavailableError, first_line

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.status import StatusTracker

    from .spark import InputType

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_WEIGHTS = 0, 1, 2, 3
INPUT_TYPES = ("bytes", "image", "path")
OUTPUT_TYPES = ("array", "vector")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, not the whole usage block
        command = self.prog.split()[-1] if " " in self.prog else "extract"
        self.exit(EXIT_USAGE, f"featurex: error: {message} (see: featurex {command} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="featurex", description="Image feature vectors on Apache Spark.")
    parser.add_argument("--version", action="version", version=f"featurex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ex = commands.add_parser(
        "extract",
        help="extract features from image files into Parquet",
        description="Read images with Spark and write Parquet with columns path, features "
        "(array<float>, or an MLlib vector with --output-type vector) and error (string).",
    )
    ex.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    ex.add_argument("--output", "-o", required=True, help="output Parquet folder")
    _model_arguments(ex)
    ex.add_argument("--batch-size", type=int, default=None, help="inference batch size")
    ex.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ex.add_argument("--precision", default="fp32", choices=PRECISIONS)
    ex.add_argument(
        "--input-type",
        default="bytes",
        choices=INPUT_TYPES,
        help="bytes: read files with Spark's binaryFile source (default); image: Spark's image "
        "source (decoded by Spark); path: INPUT folders are listed and INPUT files are text "
        "listings of paths or URIs (one per line, relative to the listing), read on the executors",
    )
    ex.add_argument(
        "--output-type",
        default="array",
        choices=OUTPUT_TYPES,
        help="features as array<float> (default) or an MLlib DenseVector",
    )
    ex.add_argument("--glob", default=None, help="only files whose name matches, e.g. '*.jpg'")
    ex.add_argument("--master", default="local[*]", help="Spark master (default: local[*])")
    ex.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting, e.g. spark.executor.memory=8g (repeatable)",
    )
    ex.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    ex.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    ex.add_argument(
        "--progress-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="when stderr is not a terminal, a progress line every SECONDS (default: 10)",
    )
    info = commands.add_parser(
        "info",
        help="versions, Java, devices, and whether the model's weights are cached",
        description="Show the versions featurex runs with, the Java Spark would use, the "
        "devices torch sees and whether --model's weights are in the torch hub cache.",
    )
    _model_arguments(info)
    info.add_argument("--json", action="store_true", help="one JSON object instead of text")
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="resnet50", help="torchvision model (default: resnet50)")
    parser.add_argument(
        "--weights",
        default="DEFAULT",
        help="torchvision weights name (DEFAULT, IMAGENET1K_V1, ...), a checkpoint PATH "
        "(.pth/.pt/.safetensors), or none for random init (default: DEFAULT)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = _info if args.command == "info" else _extract
    try:
        return command(args)
    except ConfigError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except WeightsUnavailableError as exc:
        return _fail(EXIT_NO_WEIGHTS, str(exc))
    except MissingDependencyError as exc:
        return _fail(EXIT_USAGE, str(exc))


def _fail(code: int, message: str) -> int:
    print(f"featurex: error: {message}", file=sys.stderr)
    return code


def _local(path: str) -> str | None:
    """The local filesystem path of an INPUT or OUT (a plain path or a file: URI), or None."""
    if path.startswith("file:"):
        return urlparse(path).path
    return None if "://" in path else path


# ---------------------------------------------------------------- extract


def _extract(args: argparse.Namespace) -> int:
    config = ExtractorConfig(
        model=args.model, weights=args.weights, batch_size=args.batch_size, device=args.device,
        precision=args.precision,
    )  # fmt: skip
    for setting in args.conf:
        if not re.fullmatch(r"spark\.[\w.\-]+=.*", setting):
            raise ConfigError(f"--conf expects spark.KEY=VALUE, got {setting!r}")
    if not args.progress_every > 0:
        raise ConfigError(f"--progress-every must be a positive number, got {args.progress_every}")
    for path in args.inputs:
        local = _local(path)
        if local is not None and not os.path.exists(local):
            raise ConfigError(f"input not found: {path!r}")
    output = args.output
    local = _local(output)
    if local is not None and os.path.exists(local) and not args.overwrite:
        raise ConfigError(f"output {output!r} exists: pass --overwrite to replace it")
    if isinstance(config.model, str) and config.weights is not None and not config.checkpoint:
        # Fail now, in one line, rather than in every task of the job.
        from .models import ensure_weights, resolve_weights

        ensure_weights(config.model, resolve_weights(config.model, config.weights))

    spark = _session(args.master, dict(c.split("=", 1) for c in args.conf))
    try:
        return _run_job(spark, args, config)
    finally:
        spark.stop()


def _session(master: str, conf: dict[str, str]) -> SparkSession:
    require_pyspark("featurex extract")
    from pyspark.sql import SparkSession

    if master.startswith("local"):
        # Workers must run this same interpreter, which has featurex and torch installed.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    defaults = {
        "spark.ui.showConsoleProgress": "false",  # featurex draws its own
        "spark.log.level": "ERROR",
        # The UDF re-chunks to batch_size itself; small Arrow batches keep worker memory low.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "256",
    }
    builder = SparkSession.builder.master(master).appName("featurex extract")
    for key, value in {**defaults, **conf}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _run_job(spark: SparkSession, args: argparse.Namespace, config: ExtractorConfig) -> int:
    from pyspark.sql import functions as F

    from .spark import features_column

    images, column, input_type = _inputs(spark, args)
    total = images.count()  # lists files (or listing lines) only: no image is read here
    if total == 0:
        return _fail(EXIT_USAGE, f"no images found in {' '.join(args.inputs)}")
    result = features_column(column, config, with_errors=True, input_type=input_type)
    features = F.col("r.features")
    if args.output_type == "vector":
        from .ml import to_vector

        features = to_vector(features)
    out = images.select("path", result.alias("r")).select(
        "path", features.alias("features"), F.col("r.error").alias("error")
    )

    tracker = spark.sparkContext.statusTracker()
    progress = _Progress(tracker, total, args.output, sys.stderr, args.progress_every)
    started = time.perf_counter()
    if not args.quiet:
        progress.start()
    try:
        out.write.mode("overwrite" if args.overwrite else "errorifexists").parquet(args.output)
    except Exception as exc:
        progress.stop(success=False)
        return _fail(EXIT_FAILED, f"the job failed: {_root_cause(exc)}")
    progress.stop(success=True)
    elapsed = time.perf_counter() - started

    written = spark.read.parquet(args.output)
    row = written.agg(F.count("*").alias("n"), F.count("error").alias("failed")).first()
    assert row is not None
    n, failed = int(row["n"]), int(row["failed"])
    local = _local(args.output)
    where = os.path.abspath(local) if local is not None else args.output
    print(
        f"featurex: {n} images, {failed} failed, {n / elapsed:.1f} images/s "
        f"({elapsed:.1f} s, {args.model}, {config.precision}) -> {where}"
    )
    return EXIT_OK


def _inputs(spark: SparkSession, args: argparse.Namespace) -> tuple[DataFrame, str, InputType]:
    """The images to read: a DataFrame with a `path` column, its input column and kind."""
    from pyspark.sql import functions as F

    def files(source: str, inputs: list[str]) -> DataFrame:
        reader = spark.read.format(source).option("recursiveFileLookup", "true")
        if args.glob:
            reader = reader.option("pathGlobFilter", args.glob)
        return reader.load(inputs)

    if args.input_type == "bytes":
        return files("binaryFile", args.inputs).select("path", "content"), "content", "bytes"
    if args.input_type == "image":
        images = files("image", args.inputs).select(F.col("image.origin").alias("path"), "image")
        return images, "image", "image"
    # "path": folders are listed by Spark (names only, binaryFile reads no content unless
    # asked); files are listings whose relative entries are relative to the listing's folder.
    folders = [p for p in args.inputs if os.path.isdir(_local(p) or "")]
    parts = [files("binaryFile", folders).select("path")] if folders else []
    for listing in (p for p in args.inputs if p not in folders):
        local = _local(listing)
        base = os.path.dirname(os.path.abspath(local)) if local is not None else ""
        entry = F.trim(F.col("value"))
        absolute = entry.contains("://") | entry.startswith("/") | F.lit(not base)
        path = F.when(absolute, entry).otherwise(F.concat(F.lit(base + os.sep), entry))
        lines = spark.read.text(listing).where((entry != "") & ~entry.startswith("#"))
        parts.append(lines.select(path.alias("path")))
    paths = parts[0]
    for part in parts[1:]:
        paths = paths.unionByName(part)
    return paths, "path", "path"


def _root_cause(exc: BaseException) -> str:
    """The worker's own error line from a Spark failure, not Spark's wrapper around it."""
    lines = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception): .+)$", str(exc), re.M)
    return lines[-1] if lines else first_line(exc)


class _Progress:
    """Images done out of the total, the rate and the time, on stderr, while the job runs.

    Done counts real images: the rows in the Parquet files of tasks that have committed
    (Spark's default committer moves them to OUT/_temporary/<n>/task_*/ on task commit;
    their footers hold the row counts). Where the output is not local or that layout is
    absent, done is estimated from Spark's status tracker (completed / all tasks) and shown
    as "~N". On a terminal one line is redrawn; elsewhere (CI, logs) a line every N seconds.
    """

    def __init__(
        self, tracker: StatusTracker, total: int, output: str, stream: IO[str], every: float
    ) -> None:
        self._tracker = tracker
        self._total = total
        self._output = _local(output)
        self._stream = stream
        self._tty = stream.isatty()
        self._every = 0.5 if self._tty else every
        self._footers: dict[str, int] = {}  # committed task file -> rows
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="featurex-progress")
        self._started = time.perf_counter()
        self._running = False

    def start(self) -> None:
        self._started = time.perf_counter()
        self._running = True
        self._thread.start()

    def stop(self, success: bool) -> None:
        if not self._running:
            return
        self._done.set()
        self._thread.join()
        if success:  # the job committed: every image is done
            self._show(self._line(self._total, exact=True, tasks=None))
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _loop(self) -> None:
        while not self._done.wait(self._every):
            tasks = self._tasks()
            if tasks is None:
                continue  # between jobs
            completed, all_tasks = tasks
            done = self._committed_rows()
            exact = done is not None and (done > 0 or completed == 0)
            if not exact:
                done = self._total * completed // all_tasks
            self._show(self._line(done or 0, exact, tasks))

    def _show(self, line: str) -> None:
        self._stream.write(f"\r{line}\x1b[K" if self._tty else f"{line}\n")
        self._stream.flush()

    def _tasks(self) -> tuple[int, int] | None:
        completed = all_tasks = 0
        for stage_id in self._tracker.getActiveStageIds():
            info = self._tracker.getStageInfo(stage_id)
            if info is not None:
                completed += info.numCompletedTasks
                all_tasks += info.numTasks
        return (completed, all_tasks) if all_tasks else None

    def _committed_rows(self) -> int | None:
        """Rows in the committed tasks' files, or None where they cannot be seen."""
        if self._output is None:
            return None
        import pyarrow.parquet as pq

        pattern = os.path.join(glob.escape(self._output), "_temporary", "*", "task_*", "*.parquet")
        for path in glob.glob(pattern):
            if path not in self._footers:
                try:
                    self._footers[path] = pq.read_metadata(path).num_rows
                except (OSError, ValueError):  # moved by the job commit, or not yet readable
                    continue
        return sum(self._footers.values())

    def _line(self, done: int, exact: bool, tasks: tuple[int, int] | None) -> str:
        elapsed = time.perf_counter() - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{done}/{self._total}" if exact else f"~{done}/{self._total}"
        task_text = f", tasks {tasks[0]}/{tasks[1]}" if tasks else ""
        if self._tty:
            width = 24
            bar = "#" * (width * done // self._total)
            return (
                f"extract [{bar:<{width}}] {count} images, {rate:.1f} img/s, "
                f"{elapsed:.0f} s{task_text}"
            )
        percent = 100 * done // self._total
        return (
            f"featurex: progress {count} images ({percent}%), {rate:.1f} images/s, "
            f"{elapsed:.0f} s{task_text}"
        )


# ---------------------------------------------------------------- info


def _info(args: argparse.Namespace) -> int:
    config = ExtractorConfig(model=args.model, weights=args.weights)
    report: dict[str, Any] = {
        "featurex": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        **{name: _version(name) for name in ("pyspark", "torch", "torchvision")},
        "java": _java(),
        "device": _device(),
        "weights": _weights(config),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    java, device, weights = report["java"], report["device"], report["weights"]
    report["java"] = f"{java['version']} ({java['path']})" if java["path"] else java["version"]
    gpus = ", ".join(f"cuda:{i} {name}" for i, name in enumerate(device["gpus"]))
    report["device"] = (
        f"cuda ({gpus})" if device["cuda"] else f"cpu ({device['cpus']} cores, no CUDA)"
    )
    report["weights"] = f"{weights['model']} {weights['weights']}: {weights['status']}"
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    return EXIT_OK


def _version(package: str) -> str:
    """The module's own version string: torch's names its CUDA build (2.4.1+cu121)."""
    import importlib

    try:
        return str(importlib.import_module(package).__version__)
    except ImportError:
        return "not installed"


def _java() -> dict[str, str | None]:
    """`java -version`'s first line, for the java Spark would start (JAVA_HOME first)."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        missing = "not found: Spark needs Java 17 or newer (set JAVA_HOME or put java on PATH)"
        return {"version": missing, "path": None}
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
        lines = (done.stderr or done.stdout).strip().splitlines()
        text = lines[0] if lines else "unknown version"
    except (OSError, subprocess.SubprocessError) as exc:
        text = f"does not run: {first_line(exc)}"
    return {"version": text, "path": java}


def _device() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {"cuda": cuda, "gpus": gpus, "cpus": os.cpu_count()}


def _weights(config: ExtractorConfig) -> dict[str, Any]:
    """Where --model's weights come from, and whether they are already on this machine."""
    assert isinstance(config.model, str)
    found: dict[str, Any] = {"model": config.model, "weights": config.weights, "file": None}
    if config.weights is None:
        return {**found, "weights": "none", "cached": None, "status": "random init"}
    if config.checkpoint is not None:
        return {**found, "file": config.checkpoint, "cached": True, "status": "local checkpoint"}
    from .models import resolve_weights, weights_file

    weights = resolve_weights(config.model, config.weights)
    path = weights_file(weights)
    cached = os.path.isfile(path)
    status = f"cached at {path}" if cached else f"not cached (would download {weights.url})"
    return {**found, "weights": str(weights), "file": path, "cached": cached, "status": status}
