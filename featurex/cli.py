"""The `featurex` command: `featurex extract INPUT... --output OUT` and `featurex info`.

Exit codes: 0 success; 1 the job failed; 2 a bad argument (one line, before Spark starts);
3 pretrained weights could not be downloaded (one line naming --weights PATH / none).
"""

from __future__ import annotations

import argparse
import dataclasses
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

from . import __version__
from ._compat import require_pyspark
from ._dedup_cli import add_parser as add_dedup_parser
from ._dedup_cli import run as _dedup
from ._listing import describe_omitted, image_extensions, plural
from ._logs import quiet_libraries
from ._types import DECODES, ON_ERRORS, PRECISIONS
from ._words import FlagWords, opt, speaking
from .config import OPTIONS, ExtractorConfig
from .errors import ConfigError, MissingDependencyError, WeightsUnavailableError, first_line
from .models import family
from .models.runtime import DEFAULT_BATCH_SIZE, precision_ran

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.status import StatusTracker

    from ._inputs import Found
    from ._runs import LocalStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_WEIGHTS = 0, 1, 2, 3
INPUT_TYPES = ("bytes", "image", "path")
OUTPUT_TYPES = ("array", "vector")
DEFAULT_COMMIT_EVERY = 1000


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, not the whole usage block
        command = self.prog.split()[-1] if " " in self.prog else "extract"
        self.exit(EXIT_USAGE, f"featurex: error: {message} (see: featurex {command} --help)\n")


def _default(option: str) -> Any:
    """ExtractorConfig's default for an option: the flags' defaults are the config's."""
    return next(f.default for f in dataclasses.fields(ExtractorConfig) if f.name == option)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="featurex", description="Image feature vectors on Apache Spark.")
    parser.add_argument("--version", action="version", version=f"featurex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ex = commands.add_parser(
        "extract",
        help="extract features from image files into Parquet",
        description="Read images with Spark and write Parquet with columns path, features "
        "(array<float>, or an MLlib vector with --output-type vector) and error (string). "
        "Every option of the Python API has a flag here but transform, a Python callable.",
    )
    ex.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    ex.add_argument("--output", "-o", required=True, help="output Parquet folder")
    _model_arguments(ex)
    _engine_arguments(ex)
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
    ex.add_argument(
        "--glob",
        default=None,
        metavar="PATTERN",
        help="only files in INPUT folders whose name matches, e.g. '*.jpg', or '*' for every "
        "file (default: the image formats featurex decodes, by extension in any case: "
        f"{', '.join(image_extensions())}). Names starting with _ or . are inputs like any "
        "other; macOS ._ files never are. The summary counts every file left out, by reason",
    )
    ex.add_argument("--master", default="local[*]", help="Spark master (default: local[*])")
    ex.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting, e.g. spark.executor.memory=8g (repeatable)",
    )
    ex.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it holds an earlier run's output (featurex deletes only its own "
        "output: a folder holding other files is refused)",
    )
    ex.add_argument(
        "--resume",
        action="store_true",
        help="continue an earlier run into OUT: keep what it holds, featurize only the inputs "
        "it lacks or that changed since (size or modification time); refused if OUT was made "
        "with another model, weights, precision or preprocessing",
    )
    ex.add_argument(
        "--commit-every",
        type=int,
        default=DEFAULT_COMMIT_EVERY,
        metavar="N",
        help="commit OUT in chunks of N images, each one Parquet file renamed into place, so a "
        f"crash loses at most the chunk in flight (default: {DEFAULT_COMMIT_EVERY})",
    )
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
    add_dedup_parser(commands)
    parser.set_defaults(words=flag_words(ex))
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=_default("model"),
        help="a torchvision model (default: resnet50), hf:<repo id or folder>[@revision], "
        "timm:<name>[.tag] or open_clip:<arch>",
    )
    parser.add_argument(
        "--weights",
        default=_default("weights"),
        help="DEFAULT (the family's pretrained weights), a weights name (IMAGENET1K_V1) or "
        "open_clip tag, a checkpoint PATH (.pth/.pt/.safetensors), or none for random init",
    )


def _engine_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag for each option of ExtractorConfig (but transform), named after it."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--seed",
        type=int,
        default=_default("seed"),
        metavar="N",
        help="the random-init seed, with --weights none (default: %(default)s)",
    )
    model.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a pickled full-model checkpoint (torch.save(model)), which runs code from "
        "the file when loaded",
    )
    run = parser.add_argument_group("where and how fast")
    run.add_argument(
        "--batch-size",
        type=int,
        default=_default("batch_size"),
        metavar="N",
        help="images per forward pass (default: "
        f"{DEFAULT_BATCH_SIZE['cpu']} on the CPU, {DEFAULT_BATCH_SIZE['cuda']} on a GPU)",
    )
    run.add_argument(
        "--device",
        default=_default("device"),
        help="auto (a GPU where there is one), cpu, cuda or cuda:N (default: %(default)s)",
    )
    run.add_argument(
        "--precision",
        default=_default("precision"),
        choices=PRECISIONS,
        help="fp32; bf16 or fp16 (autocast: faster where the CPU or GPU has kernels for them, "
        "features slightly off fp32); int8: quantized at load, on the CPU (default: %(default)s)",
    )
    run.add_argument(
        "--calibration",
        default=_default("calibration"),
        metavar="FOLDER",
        help="with --precision int8: a folder of images to calibrate on (default: featurex's "
        "own six photos)",
    )
    run.add_argument(
        "--decode",
        default=_default("decode"),
        choices=DECODES,
        help="where images are decoded and preprocessed: auto (on the GPU when the model runs "
        "on CUDA), cpu or gpu (default: %(default)s)",
    )
    run.add_argument(
        "--decode-threads",
        type=int,
        default=_default("decode_threads"),
        metavar="N",
        help="threads decoding images in each task (default: 1 on the CPU, the task's cores on "
        "a GPU)",
    )
    run.add_argument(
        "--read-ahead",
        type=int,
        default=_default("read_ahead"),
        metavar="N",
        help="--input-type path: files read at once, ahead of decoding (default: 16)",
    )
    run.add_argument(
        "--optimize",
        action=argparse.BooleanOptionalAction,
        default=_default("optimize"),
        help="on the CPU, run a traced, frozen graph with oneDNN fusions (checked against eager "
        "PyTorch) (default: the family's choice)",
    )
    run.add_argument(
        "--fast-decode",
        action=argparse.BooleanOptionalAction,
        default=_default("fast_decode"),
        help="decode big JPEGs at a reduced DCT scale: much faster, features slightly changed "
        "(default: on with --precision int8, off otherwise)",
    )
    out = parser.add_argument_group("what comes out")
    out.add_argument(
        "--normalize", action="store_true", help="L2-normalized features (cosine-ready)"
    )
    bad = parser.add_argument_group("bad images")
    bad.add_argument(
        "--on-error",
        default=_default("on_error"),
        choices=ON_ERRORS,
        help="null: a bad image gets null features and its reason in the error column; "
        "raise: the run fails, naming the file (default: %(default)s)",
    )
    bad.add_argument(
        "--max-pixels",
        type=int,
        default=_default("max_pixels"),
        metavar="N",
        help="images with more pixels are refused from their header (default: %(default)s)",
    )


def flag_words(parser: argparse.ArgumentParser) -> FlagWords:
    """How errors name options on this command line: each option by its flag."""
    flags, switches, negatable = {}, set(), set()
    for action in parser._actions:  # argparse keeps no public list of them
        long = [o for o in action.option_strings if o.startswith("--")]
        if long:
            flags[action.dest] = long[0]
            if action.nargs == 0:  # store_true, or --FLAG/--no-FLAG
                switches.add(action.dest)
            if isinstance(action, argparse.BooleanOptionalAction):
                negatable.add(action.dest)
    return FlagWords(flags, frozenset(switches), frozenset(negatable))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()  # the command owns the console
    commands: dict[str, Callable[[argparse.Namespace], int]] = {"info": _info, "dedup": _dedup}
    command = commands.get(args.command, _extract)
    try:
        with speaking(args.words):  # errors name flags, not Python keywords
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


# ---------------------------------------------------------------- extract


def _config(args: argparse.Namespace) -> ExtractorConfig:
    """The config of the flags, which are named after its options."""
    names = ("model", "weights", *(o for o in OPTIONS if o != "transform"))
    return ExtractorConfig(**{name: getattr(args, name) for name in names})


def _extract(args: argparse.Namespace) -> int:
    from ._runs import LocalStore, check_output, check_overlap, fingerprint, local_path

    launched = time.perf_counter()
    config = _config(args)
    for setting in args.conf:
        if not re.fullmatch(r"spark\.[\w.\-]+=.*", setting):
            raise ConfigError(f"--conf expects spark.KEY=VALUE, got {setting!r}")
    if not args.progress_every > 0:
        raise ConfigError(f"--progress-every must be a positive number, got {args.progress_every}")
    if args.commit_every < 1:
        raise ConfigError(
            f"--commit-every must be a positive number of images, got {args.commit_every}"
        )
    if args.resume and args.overwrite:
        raise ConfigError("--resume keeps OUT and --overwrite replaces it: pass one of them")
    for path in args.inputs:
        local = local_path(path)
        if local is not None and not os.path.exists(local):
            raise ConfigError(f"input not found: {path!r}")
    check_overlap(args.inputs, args.output)
    _check_device_here(config, args.master)
    wanted = fingerprint(config, args.input_type, args.output_type)
    local = local_path(args.output)
    found, listed = None, ""
    if local is not None:  # elsewhere, once Spark's filesystems are up
        check_output(LocalStore(local), wanted, args.resume, args.overwrite, args.output)
        if all(local_path(p) is not None for p in args.inputs):
            found, listed = _listed(args)
            if args.resume and _nothing_to_do(args, config, found, LocalStore(local)):
                return EXIT_OK  # no weights, no Spark: what OUT holds is all there is
    # Download now, or fail in one line, rather than in every task of the job.
    family(config.source.family).fetch(config.source)

    require_pyspark("featurex extract")  # missing: one line, before any stage is said
    _stage(args, f"{listed}starting Spark (--master {args.master})")
    start = time.perf_counter()
    spark = _session(args.master, dict(c.split("=", 1) for c in args.conf))
    _stage(args, f"Spark started in {time.perf_counter() - start:.1f} s")
    try:
        return _run(spark, args, config, wanted, launched, found)
    finally:
        spark.stop()


def _stage(args: argparse.Namespace, message: str) -> None:
    """A start-up stage on stderr, as it happens (the wait before the first image)."""
    if not args.quiet:
        print(f"featurex: {message}", file=sys.stderr, flush=True)


def _listed(args: argparse.Namespace, spark: SparkSession | None = None) -> tuple[Found, str]:
    """Every file under the INPUTs (local ones without Spark), and the stage to say (after
    the weights' check: a command that fails says so in one line)."""
    from ._inputs import Source

    start = time.perf_counter()
    found = Source(spark, args.inputs, args.input_type, args.glob).scan()
    took = time.perf_counter() - start
    return found, f"{plural(found.found, 'file', 'files')} listed in {took:.1f} s; "


def _nothing_to_do(
    args: argparse.Namespace, config: ExtractorConfig, found: Found, store: LocalStore
) -> bool:
    """A --resume whose inputs OUT already holds: said, with no Spark session and no job."""
    from ._runs import plan, recover

    if found.inputs.empty:
        return False  # the run says why, in its words
    todo = plan(found.inputs, recover(store), args.commit_every)
    if not (todo.new.empty and todo.changed.empty):
        return False
    _summary(args, found, 0, 0, todo.skipped, 0.0, 0.0, config.precision)
    return True


def _check_device_here(config: ExtractorConfig, master: str) -> None:
    """With local Spark, this machine runs the tasks: a GPU it lacks fails here, in one line.

    On a cluster the executors may have GPUs the driver lacks; there a task without one
    fails at once, saying so.
    """
    if not master.startswith("local"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    ordinal = config.device.partition(":")[2]
    if config.device.startswith("cuda") and count <= int(ordinal or 0):
        has = f"{count} GPU{'s' if count > 1 else ''}" if count else "no CUDA GPU"
        raise ConfigError(
            f"{opt('device', config.device)}, but this machine has {has}, and local Spark "
            f"(--master {master}) runs its tasks here: pass {opt('device', 'cpu')} (or auto), "
            f"or a --master whose executors have GPUs"
        )
    if config.decode == "gpu" and not count:
        raise ConfigError(
            f"{opt('decode', 'gpu')}, but this machine has no CUDA GPU, and local Spark "
            f"(--master {master}) runs its tasks here: pass {opt('decode', 'auto')} (or cpu), "
            f"or a --master whose executors have GPUs"
        )


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
        # The driver collects the listing of the inputs: through Arrow, not row by row.
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    builder = SparkSession.builder.master(master).appName("featurex extract")
    for key, value in {**defaults, **conf}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _run(
    spark: SparkSession,
    args: argparse.Namespace,
    config: ExtractorConfig,
    wanted: dict[str, str],
    launched: float,
    found: Found | None,
) -> int:
    from ._runs import Run, Source, check_output, feature_rows, open_store, plan

    store = open_store(spark, args.output)
    check_output(store, wanted, args.resume, args.overwrite, args.output)  # it may have changed
    source = Source(spark, args.inputs, args.input_type, args.glob)
    if found is None:  # listed once: no image is read here
        found, listed = _listed(args, spark)
        _stage(args, listed.removesuffix("; "))
    if found.inputs.empty:
        which = "" if args.glob else " (files with an image extension: --glob '*' takes all)"
        left = f": {describe_omitted(found.omitted)}" if found.omitted else ""
        return _fail(EXIT_USAGE, f"no images found in {' '.join(args.inputs)}{which}{left}")
    ran = (
        precision_ran(config.precision, config.device) if args.master.startswith("local") else None
    )
    job = Run(spark, store, source, feature_rows(config, args.output_type))
    held = job.prepare(wanted, args.resume, args.overwrite, ran)
    todo = plan(found.inputs, held, args.commit_every)

    tracker = spark.sparkContext.statusTracker()
    progress = _Progress(
        tracker, todo.total, todo.skipped, sys.stderr, args.progress_every, args.resume
    )
    if todo.skipped:
        _stage(args, f"{todo.skipped} of {todo.total} images already in OUT")
    _stage(args, "the job starts: each Python worker loads the model before its first image")
    started = time.perf_counter()
    if not args.quiet:
        progress.start()
    try:
        totals = job.execute(todo, progress.add)
    except Exception as exc:
        progress.stop(success=False)
        return _fail(EXIT_FAILED, f"the job failed: {_root_cause(exc)}")
    progress.stop(success=True)
    elapsed = time.perf_counter() - started
    precision = config.precision if ran in (None, config.precision) else (
        f"{ran}, {config.precision} asked"
    )  # fmt: skip
    _summary(
        args, found, totals.extracted, totals.failed, todo.skipped, elapsed,
        started - launched, precision,
    )  # fmt: skip
    return EXIT_OK


def _summary(
    args: argparse.Namespace,
    found: Found,
    extracted: int,
    failed: int,
    skipped: int,
    elapsed: float,
    startup: float,
    precision: str,
) -> None:
    """The files' accounting, then the summary line: the job's rate, and apart from it the
    start-up before the job (Spark, listing, planning)."""
    print(_accounting(found.found, extracted + skipped, found.omitted))
    rate = extracted / elapsed if elapsed > 0 else 0.0
    print(
        f"featurex: {extracted} images, {failed} failed, {skipped} skipped as already done, "
        f"{rate:.1f} images/s ({elapsed:.1f} s, start-up {startup:.1f} s, {args.model}, "
        f"{precision}) -> {args.output}"
    )


def _accounting(found: int, rows: int, omitted: dict[str, list[str]]) -> str:
    """Every file found is a row of OUT or left out for a counted reason:
    "featurex: 28 files found = 23 rows + 5 left out: 3 not images (...); 2 macOS ._ files"."""
    left = sum(map(len, omitted.values()))
    line = f"featurex: {plural(found, 'file', 'files')} found = {plural(rows, 'row', 'rows')}"
    return f"{line} + {left} left out: {describe_omitted(omitted)}" if left else line


def _root_cause(exc: BaseException) -> str:
    """The worker's own error line from a Spark failure, not Spark's wrapper around it."""
    lines = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception): .+)$", str(exc), re.M)
    return lines[-1] if lines else first_line(exc)


class _Progress:
    """Images done out of the total, the rate and the time, on stderr, while the job runs.

    Done is counted, never estimated: the inputs skipped as already in OUT plus the rows of
    the chunks this run has committed. The current chunk's job shows as its tasks. On a
    terminal one line is redrawn; elsewhere (CI, logs) a line every N seconds.
    """

    def __init__(
        self,
        tracker: StatusTracker,
        total: int,
        skipped: int,
        stream: IO[str],
        every: float,
        show_skipped: bool,
    ) -> None:
        self._tracker = tracker
        self._total = total
        self._skipped = skipped
        self._extracted = 0
        self._show_skipped = show_skipped
        self._stream = stream
        self._tty = stream.isatty()
        self._every = 0.5 if self._tty else every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="featurex-progress")
        self._started = time.perf_counter()
        self._running = False

    def start(self) -> None:
        self._started = time.perf_counter()
        self._running = True
        self._thread.start()

    def add(self, rows: int) -> None:
        """A chunk of `rows` images was committed."""
        self._extracted += rows

    def stop(self, success: bool) -> None:
        if not self._running:
            return
        self._done.set()
        self._thread.join()
        if success:
            self._show(self._line(tasks=None))
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _loop(self) -> None:
        while not self._done.wait(self._every):
            self._show(self._line(self._tasks()))

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

    def _line(self, tasks: tuple[int, int] | None) -> str:
        elapsed = time.perf_counter() - self._started
        extracted = self._extracted
        done = self._skipped + extracted
        rate = extracted / elapsed if elapsed > 0 else 0.0
        skipped = f", {self._skipped} skipped" if self._show_skipped else ""
        task_text = f", tasks {tasks[0]}/{tasks[1]}" if tasks else ""
        if self._tty:
            width = 24
            bar = "#" * (width * done // self._total)
            return (
                f"extract [{bar:<{width}}] {done}/{self._total} images{skipped}, "
                f"{rate:.1f} img/s, {elapsed:.0f} s{task_text}"
            )
        percent = 100 * done // self._total
        return (
            f"featurex: progress {done}/{self._total} images ({percent}%){skipped}, "
            f"{rate:.1f} images/s, {elapsed:.0f} s{task_text}"
        )


# ---------------------------------------------------------------- info


def _info(args: argparse.Namespace) -> int:
    weights = _weights(args.model, args.weights)  # a bad --model fails first, in one line
    report: dict[str, Any] = {
        "featurex": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        **{name: _version(name) for name in ("pyspark", "torch", "torchvision")},
        "java": _java(),
        "device": _device(),
        "cpu": _cpu(),
        "weights": weights,
        "cache": _graph_cache(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    java, device, weights, cpu = report["java"], report["device"], report["weights"], report["cpu"]
    report["cpu"] = (
        f"{cpu['name']} ({', '.join(cpu['features']) or 'no AVX2'}): "
        f"recommended precision {cpu['recommended_precision']}"
    )
    report["java"] = f"{java['version']} ({java['path']})" if java["path"] else java["version"]
    gpus = ", ".join(f"cuda:{i} {name}" for i, name in enumerate(device["gpus"]))
    report["device"] = (
        f"cuda ({gpus})" if device["cuda"] else f"cpu ({device['cpus']} cores, no CUDA)"
    )
    report["weights"] = f"{weights['model']} {weights['weights']}: {weights['status']}"
    cache = report["cache"]
    report["cache"] = (
        f"{cache['path']}: {plural(cache['graphs'], 'optimized graph', 'optimized graphs')}, "
        f"{cache['bytes'] / 1e6:.0f} MB (FEATUREX_CACHE_DIR)"
        if cache["path"]
        else "off (FEATUREX_CACHE_DIR is empty)"
    )
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    return EXIT_OK


def _graph_cache() -> dict[str, Any]:
    from .models import graph_cache

    return graph_cache.summary()


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


def _cpu() -> dict[str, Any]:
    from .models.runtime import cpu_features, recommended_precision

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            name = next(
                ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return {
        "name": name,
        "features": list(cpu_features()),
        "recommended_precision": recommended_precision(),
    }


def _weights(model: str, weights: str) -> dict[str, Any]:
    """Where --model's weights come from, and whether they are already on this machine.

    Weights that are not here are "not cached", whatever the family: an `hf:` repo that can
    be neither found in the cache nor resolved on the Hub too (its commit is unknown then).
    """
    try:
        config = ExtractorConfig(model=model, weights=weights)
    except WeightsUnavailableError as exc:
        return {"model": model, "weights": weights, "cached": False, "file": None,
                "status": f"not cached ({exc})"}  # fmt: skip
    status = family(config.source.family).weights_status(config.source)
    return {"model": model, **dataclasses.asdict(status)}
