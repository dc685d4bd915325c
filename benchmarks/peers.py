"""featurex against the tools users pick instead: Daft, Ray Data and the seed's row UDF.

    python -m benchmarks.peers                  # 256 and 4,096 images, ResNet-50, every row
    python -m benchmarks.peers --smoke          # 12 images, resnet18, one round (the suite's)
    python -m benchmarks.peers --sizes 256 --rounds 3 --rows featurex:fp32,daft:fp32

Every tool reads the same JPEG files (`benchmarks.images`) and writes Parquet (path,
features) with the same model (torchvision's, random init from one seed, classifier removed)
and the same preprocessing (the transforms torchvision ships with the weights: Resize(256),
CenterCrop(224), ImageNet normalization, on Pillow images). Each run is a fresh process
tree launched by this one, rows in turns within a round (a different one first each round):

- wall: from the launch to the Parquet written (the job committed);
- first vector: when the first unit of work was done. A unit is a Spark task for the Spark
  rows (its Parquet part file's modification time: the task closes it at its end), a batch
  for Daft and Ray Data (stamped by the model class itself after its forward pass), a
  committed chunk for `featurex extract` (1,000 images by default: its first output);
- steady: the images finished after the first unit over the time from the first unit to
  the last (with 3 units or more: Spark's 2 first tasks end together);
- CPU: user + system time of the whole process tree (JVM, Python workers, Ray's daemons):
  each process's own time read every 0.1 s, its last reading summed (a process's last tenth
  of a second is missed). Not the kernel's accounting of reaped children: pyspark's daemon
  ignores SIGCHLD, so a Python worker that exits before it is reaped unaccounted (it missed
  50-75% of a Spark run's time in the 2026-12-07 run); the JSON keeps it as `reaped_cpu_s`;
- memory: the peak of the process tree's summed PSS, sampled every half second.

All clocks are `time.time()` on one machine. Results: benchmarks/results/peers.json and
peers.md (`--smoke`: peers-smoke.*), each run's output in results/logs/peers/.
"""

from __future__ import annotations

import time

STARTED = time.time()  # a child's first moment in Python: its interpreter start is before

import argparse  # noqa: E402
import ctypes  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import IO, Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("featurex", "featurex_cold", "featurex_cli", "daft", "ray", "row_udf")
PACKAGE = {"daft": "daft", "ray": "ray"}  # a peer's package: without it the peer is skipped
PRECISIONS = {  # what each tool runs; int8 is featurex's alone (no peer has a one-line int8)
    "featurex": ("fp32", "bf16", "int8"),
    "featurex_cold": ("fp32", "bf16", "int8"),
    "featurex_cli": ("fp32", "bf16", "int8"),
    "daft": ("fp32", "bf16"),
    "ray": ("fp32", "bf16"),
    "row_udf": ("fp32",),
}
DEFAULT_ROWS = (
    "featurex:fp32,featurex_cli:fp32,daft:fp32,ray:fp32,row_udf:fp32,"
    "featurex:bf16,daft:bf16,ray:bf16,featurex:int8"
)
SMOKE_ROWS = "featurex:fp32,row_udf:fp32,daft:fp32,ray:fp32"
LABELS = {
    "featurex": "featurex (`binaryFile` + `image_features`, `local[2]`)",
    "featurex_cold": "featurex, first run (empty graph cache)",
    "featurex_cli": "featurex CLI (`featurex extract`, `local[2]`)",
    "daft": "Daft {version} (native runner, `daft.cls`, batch {batch})",
    "ray": "Ray Data {version} (`read_images` + `map` + `map_batches`, 1 actor, batch {batch})",
    "row_udf": "seed's row UDF (broadcast model, one image per call, `local[2]`)",
}
THREADS = {
    "featurex": "2 Spark task slots, so 2 Python workers; Spark sets OMP_NUM_THREADS=1 "
    "(spark.task.cpus) in each, and featurex runs its forward pass on that one torch thread "
    "and decodes on one thread of its own per task (its INFO log: 'on 1 threads'). The JVM "
    "reads the files.",
    "featurex_cold": "as featurex.",
    "featurex_cli": "as featurex: the command starts `local[2]` itself.",
    "row_udf": "2 Python workers, each calling torch.set_num_threads(1) (the seed's advice); "
    "decode and forward one image at a time on that thread.",
    "daft": "Daft's native runner decodes on its own (Rust) thread pool and starts as many "
    "instances of the `daft.cls` as it chooses, with no `max_concurrency` (Daft's own "
    "`embed_image` sets none on a CPU either); OMP_NUM_THREADS={omp} (`--daft-omp`), so that "
    "each instance's forward pass runs on that many torch threads, as Spark and Ray set it "
    "(unset, each instance would start a team of one OpenMP thread per core).",
    "ray": "`ray.init(num_cpus=2)`: read tasks (Pillow decode) take 1 CPU each; the one actor "
    "(Ray fuses `map` into it: the preprocessing runs there) takes 1 CPU, and Ray sets "
    "OMP_NUM_THREADS=1 in it, so its forward pass runs on one torch thread.",
}
SMOKE = {"sizes": "12", "rounds": "1", "model": "resnet18", "rows": SMOKE_ROWS, "batch": 4}
FULL = {
    "sizes": "256,4096",
    "rounds": "3,1",
    "model": "resnet50",
    "rows": DEFAULT_ROWS,
    "batch": 32,
}
QUIET = {  # no telemetry from the peers (no network here anyway), no Ray dashboard
    "DAFT_ANALYTICS_ENABLED": "0",
    "DO_NOT_TRACK": "true",
    "SCARF_NO_ANALYTICS": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}


# ---------------------------------------------------------------- the parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--sizes", help="images per job, comma-separated (256,4096; --smoke 12)")
    add("--rounds", help="rounds per size, one number or one per size (3,1; --smoke 1)")
    add("--rows", help=f"tool:precision, comma-separated ({DEFAULT_ROWS})")
    add("--large-rows", help="rows for sizes above 1,024 images (default: --rows)")
    add("--model", help="a torchvision model (resnet50; --smoke resnet18)")
    add("--batch", type=int, help="Daft's and Ray Data's batch size (32; --smoke 4)")
    add("--seed", type=int, default=0, help="random-init seed shared by every tool (0)")
    add("--cores", type=int, default=2, help="local[N] and ray.init(num_cpus=N) (2)")
    add("--agree", type=int, default=256, help="images whose features are compared (256)")
    add("--startup", default="fp32,fp32-cached,fp32-eager,bf16,bf16-cached,int8",
        help="featurex loads timed in a plain process (-cached: from the graph cache the "
        "run before filled, -eager: optimize=False), '' to skip (all six)")  # fmt: skip
    add("--daft-omp", type=int, default=1,
        help="OMP_NUM_THREADS for Daft's process, 0 to leave it unset (1)")  # fmt: skip
    add("--timeout", type=float, default=1800, help="seconds per run (1800)")
    add("--smoke", action="store_true", help="12 images, resnet18, one round: the suite's check")
    add("--render", type=Path, metavar="JSON",
        help="only write a results JSON's medians and Markdown again")  # fmt: skip
    add("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    add("--data", type=Path, default=ROOT / "benchmarks" / ".data", help="generated images")
    args = parser.parse_args(argv)
    for key, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.smoke and args.startup == parser.get_default("startup"):
        args.startup = "fp32"
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    rounds = [int(r) for r in str(args.rounds).split(",") if r.strip()]
    if len(rounds) == 1:
        rounds *= len(args.size_list)
    if len(rounds) != len(args.size_list):
        parser.error(f"--rounds gives {len(rounds)} numbers for {len(args.size_list)} sizes")
    args.round_list = rounds
    args.row_list = _rows(parser, args.rows)
    args.large_row_list = _rows(parser, args.large_rows) if args.large_rows else args.row_list
    args.startup_list = [s for s in args.startup.split(",") if s.strip()]
    known = {f"{p}{k}" for p in ("fp32", "bf16", "int8") for k in ("", "-eager", "-cached")}
    bad = sorted(set(args.startup_list) - known)
    if bad:
        parser.error(f"--startup: unknown {bad}: choose from {', '.join(sorted(known))}")
    if not args.size_list or min(args.size_list + rounds + [args.batch, args.cores]) < 1:
        parser.error("--sizes, --rounds, --batch and --cores must be positive")
    return args


def _rows(parser: argparse.ArgumentParser, text: str) -> list[tuple[str, str]]:
    rows = []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        peer, _, precision = item.partition(":")
        precision = precision or "fp32"
        if peer not in PEERS:
            parser.error(f"unknown tool {peer!r}: choose from {', '.join(PEERS)}")
        if precision not in PRECISIONS[peer]:
            parser.error(f"{peer} runs {', '.join(PRECISIONS[peer])}, not {precision!r}")
        rows.append((peer, precision))
    if not rows:
        parser.error("no rows to run")
    return rows


def cpu_has(precision: str, flags: list[str]) -> bool:
    """Whether this CPU has fast bf16 or int8 (the ISA featurex's `info` reports)."""
    if precision == "bf16":
        return bool({"avx512_bf16", "amx_bf16"} & set(flags))
    if precision == "int8":
        return bool({"amx_int8", "avx512_vnni", "avx_vnni"} & set(flags))
    return True


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def runnable(
    rows: list[tuple[str, str]], flags: list[str], installed: Callable[[str], bool]
) -> tuple[list[tuple[str, str]], list[str]]:
    """The rows this machine can run, and a note for each one it cannot: a peer whose
    package is missing, a precision the CPU has no fast path for."""
    entries: list[tuple[str, str]] = []
    notes: list[str] = []
    for peer, precision in rows:
        package = PACKAGE.get(peer)
        if package and not installed(package):
            note = f"{peer}: skipped, {package} is not installed (pip install -e '.[peers]')"
        elif not cpu_has(precision, flags):
            note = f"{peer} {precision}: skipped, this CPU has no fast {precision}"
        else:
            entries.append((peer, precision))
            continue
        if note not in notes:
            notes.append(note)
    return entries, notes


def machine_info(cores: int) -> dict[str, Any]:
    """The machine and the versions, without importing torch, pyspark or the peers here
    (this process only launches and measures)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from benchmarks.run import _java_version, cpu_description

    cpu, flags = cpu_description()
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "lscpu_model": next(
            (ln.strip() for ln in _command(["lscpu"]).splitlines() if "Model name" in ln), ""
        ),
        "cpu_flags": flags,
        "cores_used": cores,
        "cpus_on_host": os.cpu_count(),
        "loadavg_at_start": os.getloadavg()[0],
        "uptime": _command(["uptime"]),
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": _java_version(),
    }
    for name in ("featurex", "torch", "torchvision", "pyspark", "pyarrow", "pillow", "numpy",
                 "daft", "ray", "psutil"):  # fmt: skip
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = None
    return info


def _command(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _subreaper() -> bool:
    """Make this process the subreaper of its descendants: a daemon that outlives its parent
    (Ray's, a JVM) stays in the sampled tree and is reaped (or killed) here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(36, 1, 0, 0, 0) == 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Tree:
    """Samples this process's descendants: each one's own CPU time (every `interval`), the
    peak of their summed PSS (every `pss_every` samples: reading it costs more), and when
    each one started (its creation time, so a sample that comes late still dates it)."""

    def __init__(self, interval: float = 0.1, pss_every: int = 5) -> None:
        self.interval, self.pss_every = interval, pss_every
        self.peak_pss = 0
        self.seen: dict[int, dict[str, Any]] = {}
        self.cpu_seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peers-tree")

    def __enter__(self) -> Tree:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil  # type: ignore[import-untyped]

        me = psutil.Process()
        for tick in itertools.count():
            total, pss = 0, tick % self.pss_every == 0
            for p in me.children(recursive=True):
                try:
                    if p.pid not in self.seen:
                        self.seen[p.pid] = {
                            "created": p.create_time(),
                            "ppid": p.ppid(),
                            "cmd": " ".join(p.cmdline()[:4])[:160],
                        }
                    times = p.cpu_times()
                    self.cpu_seen[p.pid] = times.user + times.system
                    if pss:
                        total += p.memory_full_info().pss
                except psutil.Error:  # gone between the listing and the reading
                    continue
            self.peak_pss = max(self.peak_pss, total)
            if self._stop.wait(self.interval):
                return


def _pump(stream: IO[bytes], log: IO[str], launch: float, lines: list[tuple[float, str]]) -> None:
    """The child's output, each line stamped on arrival (the Python workers' lines come
    through the JVM, which copies them as they come)."""
    for raw in iter(stream.readline, b""):
        now = time.time()
        line = raw.decode("utf-8", "replace").rstrip()
        log.write(f"{now - launch:9.3f} {line}\n")
        if line.startswith("featurex INFO"):
            lines.append((now, line))


def launch(cmd: list[str], env: dict[str, str], log_path: Path, timeout: float) -> dict[str, Any]:
    """Run one process tree to its end; its wall clock stamps, CPU, PSS and output lines."""
    cpu_before = _children_cpu()
    lines: list[tuple[float, str]] = []
    with open(log_path, "w") as log, Tree() as tree:
        start = time.time()
        child = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        assert child.stdout is not None
        reader = threading.Thread(target=_pump, args=(child.stdout, log, start, lines))
        reader.start()
        try:
            returncode = child.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            returncode = child.wait()
        except BaseException:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
        ended = time.time()
        _reap_descendants(grace=15.0)
        reader.join(30)
        pss = tree.peak_pss
        seen = dict(tree.seen)
        sampled_cpu = sum(tree.cpu_seen.values())
    return {
        "launch": start,
        "exit": ended,
        "returncode": returncode,
        "cpu_s": sampled_cpu,
        "reaped_cpu_s": _children_cpu() - cpu_before,
        "peak_pss_mb": pss / 2**20,
        "processes": seen,
        "lines": lines,
    }


def _reap_descendants(grace: float) -> None:
    """Wait for the processes the child left behind (now this process's, as subreaper);
    after `grace` seconds kill them, each by its id."""
    import psutil

    deadline = time.time() + grace
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # none left
        if pid:
            continue
        if time.time() > deadline:
            for p in psutil.Process().children(recursive=True):
                try:
                    p.kill()
                except psutil.Error:
                    pass
            deadline = time.time() + grace
        time.sleep(0.1)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SPARK_LOCAL_IP="127.0.0.1", **QUIET)
    env.pop("OMP_NUM_THREADS", None)  # each tool sets its own (Spark: spark.task.cpus)
    env.update(extra or {})
    return env


def run_row(
    peer: str, precision: str, folder: Path, count: int, args: argparse.Namespace, log: Path
) -> dict[str, Any]:
    """One tool at one precision on `count` images, in a fresh process tree."""
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        out, units = Path(tmp) / "out", Path(tmp) / "units.txt"
        result_path = Path(tmp) / "result.json"
        if peer == "featurex_cli":
            cmd = [sys.executable, "-m", "featurex", "extract", str(folder), "--output",
                   str(out), "--model", args.model, "--weights", "none", "--seed",
                   str(args.seed), "--precision", precision, "--master",
                   f"local[{args.cores}]", "--progress-every", "1"]  # fmt: skip
        else:
            spec = {"peer": peer, "precision": precision, "model": args.model,
                    "seed": args.seed, "folder": str(folder), "count": count, "out": str(out),
                    "units": str(units), "cores": args.cores, "batch": args.batch}  # fmt: skip
            spec_path = Path(tmp) / "spec.json"
            spec_path.write_text(json.dumps(spec))
            cmd = [sys.executable, "-m", "benchmarks.peers", "child", str(spec_path),
                   str(result_path)]  # fmt: skip
        extra = {"FEATUREX_LOG_LEVEL": "INFO"} if peer.startswith("featurex") else {}
        # featurex's graph cache: one for the whole benchmark run (the first run of each
        # precision fills it, as a user's first job does), or an empty one for each cold run.
        extra["FEATUREX_CACHE_DIR"] = str(
            Path(tmp) / "cache" if peer == "featurex_cold" else args.cache
        )
        if peer == "daft" and args.daft_omp:
            extra["OMP_NUM_THREADS"] = str(args.daft_omp)
        env = _env(extra)
        ran = launch(cmd, env, log, args.timeout)
        if ran["returncode"] != 0:
            tail = log.read_text().strip().splitlines()[-12:] or ["no output"]
            raise RuntimeError(
                f"{tail[-1].strip()} (exit code {ran['returncode']}, log {log})\n" + "\n".join(tail)
            )
        child = json.loads(result_path.read_text()) if result_path.exists() else {}
        row = measure(peer, ran, child, out, units, count)
        row["features"] = read_features(out, args.agree)
    return row


def measure(
    peer: str,
    ran: dict[str, Any],
    child: dict[str, Any],
    out: Path,
    units_file: Path,
    count: int,
) -> dict[str, Any]:
    """A run's figures from its stamps, its units of work and its output files."""
    start = ran["launch"]
    stamps = {k: v - start for k, v in child.get("stamps", {}).items()}
    events: list[dict[str, Any]] = []
    threads: list[int] = []
    if peer in (
        "featurex",
        "featurex_cold",
        "row_udf",
    ):  # a unit is a task: its part file, closed at its end
        units = sorted(_part_files(out))
    elif peer == "featurex_cli":  # a unit is a committed chunk (1,000 images by default)
        units = sorted(_part_files(out, "chunk-*.parquet"))
        stamps["written"] = max(p.stat().st_mtime for p in out.rglob("*") if p.is_file()) - start
    else:  # Daft, Ray Data: stamped by the model class after each forward pass
        units, events, threads = _units(units_file)
        events = [{**e, "t": e["t"] - start} for e in events]  # its loads, after the launch
    rows = sum(n for _, n in units)
    if rows != count:
        raise RuntimeError(f"{peer} finished {rows} images in its units, expected {count}")
    written = stamps.get("written", ran["exit"] - start)
    first = units[0][0] - start if units else None
    steady = None
    if len(units) > 2 and units[-1][0] > units[0][0]:  # two units may end in the same tick
        steady = sum(n for _, n in units[1:]) / (units[-1][0] - units[0][0])
    loaded = [t - start for t, line in ran["lines"] if "featurex loaded" in line]
    return {
        "images": count,
        "wall_s": written,
        "images_per_s": count / written,
        "first_vector_s": first,
        "steady_images_per_s": steady,
        "units": len(units),
        "cpu_ms_per_image": 1000 * ran["cpu_s"] / count,
        "cpu_s": ran["cpu_s"],
        "reaped_cpu_s": ran["reaped_cpu_s"],
        "peak_pss_mb": ran["peak_pss_mb"],
        "exit_s": ran["exit"] - start,
        "stamps": stamps,
        "workers": _workers(ran["processes"], start),
        "models_loaded_s": loaded,
        "events": events,
        "batch_threads": sorted(set(threads)),
        "last_unit_s": units[-1][0] - start if units else None,
        "pid": child.get("pid"),
    }


def _part_files(out: Path, pattern: str = "part-*.parquet") -> list[tuple[float, int]]:
    """(modification time, rows) of each Parquet file: when its writer closed it."""
    import pyarrow.parquet as pq

    return [(p.stat().st_mtime, pq.ParquetFile(p).metadata.num_rows) for p in out.glob(pattern)]


def _units(path: Path) -> tuple[list[tuple[float, int]], list[dict[str, Any]], list[int]]:
    units, events, threads = [], [], []
    for line in path.read_text().splitlines() if path.exists() else []:
        record = json.loads(line)
        if record["what"] == "batch":
            units.append((record["t"], record["n"]))
            threads.append(record["torch_threads"])
        else:
            events.append(record)
    return sorted(units), events, threads


def _workers(processes: dict[int, dict[str, Any]], start: float) -> dict[str, Any]:
    """When pyspark's daemon and its forked Python workers started (seconds after launch)."""
    daemons = {
        pid
        for pid, p in processes.items()
        if "pyspark.daemon" in p["cmd"]
        and "pyspark.daemon" not in processes.get(p["ppid"], {}).get("cmd", "")
    }
    forks = sorted(p["created"] - start for p in processes.values() if p["ppid"] in daemons)
    return {
        "processes": len(processes),
        "daemon_started_s": min((processes[d]["created"] - start for d in daemons), default=None),
        "workers_started_s": forks,
    }


def read_features(out: Path, limit: int) -> dict[str, list[float]]:
    """The features of the first `limit` images by file name, from a tool's Parquet."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [p for p in out.rglob("*.parquet") if not p.name.startswith(("_", "."))]
    table = pa.concat_tables([pq.read_table(p) for p in files]) if files else None
    if table is None or table.num_rows == 0:
        return {}
    names = [os.path.basename(str(p)) for p in table.column("path").to_pylist()]
    column = table.column("features").combine_chunks()
    if isinstance(column.type, pa.ExtensionType):
        column = column.storage
    matrix = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    matrix = matrix.reshape(len(names), -1)
    keep = sorted(range(len(names)), key=lambda i: names[i])[:limit]
    return {names[i]: matrix[i].tolist() for i in keep}


def agreement(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's features against the reference's (the row UDF's fp32, by hand, else
    featurex fp32): the lowest cosine and the largest row-relative L2 difference."""
    import numpy as np

    done = [r for r in rows if r.get("features")]
    by = {(r["peer"], r["precision"]): r for r in done}
    ref = by.get(("row_udf", "fp32")) or by.get(("featurex", "fp32"))
    if ref is None:
        return []
    found = []
    for row in done:
        if row is ref:
            continue
        names = sorted(set(row["features"]) & set(ref["features"]))
        if not names:
            continue
        mine = np.array([row["features"][n] for n in names], dtype=np.float32)
        theirs = np.array([ref["features"][n] for n in names], dtype=np.float32)
        norm, mine_norm = np.linalg.norm(theirs, axis=1), np.linalg.norm(mine, axis=1)
        rel = float((np.linalg.norm(mine - theirs, axis=1) / np.maximum(norm, 1e-12)).max())
        cos = float(((mine * theirs).sum(1) / np.maximum(norm * mine_norm, 1e-12)).min())
        found.append({"peer": row["peer"], "precision": row["precision"], "images": len(names),
                      "against": f"{ref['peer']} {ref['precision']}", "max_rel_dev": rel,
                      "min_cosine": cos})  # fmt: skip
    return found


def startup(args: argparse.Namespace, folder: Path, logs: Path) -> list[dict[str, Any]]:
    """featurex's engine in a plain process, as in a Spark worker (one torch thread):
    imports, the model's load with and without graph optimization, the first batches."""
    found = []
    caches = Path(tempfile.mkdtemp(prefix="peers-startup-cache-"))  # one per precision
    for which in args.startup_list:
        precision, _, kind = which.partition("-")
        with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
            spec = {"peer": "startup", "precision": precision, "optimize": kind != "eager",
                    "cached": kind == "cached", "model": args.model, "seed": args.seed,
                    "folder": str(folder)}  # fmt: skip
            spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
            spec_path.write_text(json.dumps(spec))
            cmd = [sys.executable, "-m", "benchmarks.peers", "child", str(spec_path),
                   str(result_path)]  # fmt: skip
            log = logs / f"startup-{which}.log"
            print(f"  featurex start-up, {which} ...", end=" ", flush=True)
            env = {"OMP_NUM_THREADS": "1", "FEATUREX_CACHE_DIR": str(caches / precision)}
            ran = launch(cmd, _env(env), log, args.timeout)
            if ran["returncode"] != 0:
                print(f"FAILED (log {log})", flush=True)
                found.append({"which": which, "error": f"exit code {ran['returncode']}"})
                continue
            stamps = json.loads(result_path.read_text())["stamps"]
        steps = {"interpreter": stamps["start"] - ran["launch"]}
        order = ["start", "deps", "torch", "torchvision", "featurex", "loaded", "first_batch",
                 "second_batch"]  # fmt: skip
        for before, after in itertools.pairwise(order):
            steps[after] = stamps[after] - stamps[before]
        print(f"load {steps['loaded']:.1f} s", flush=True)
        found.append({"which": which, "batch": stamps["batch"], "steps": steps})
    shutil.rmtree(caches, ignore_errors=True)
    return found


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A row's medians over its rounds (each figure its own median), and the ranges."""
    keys = ("wall_s", "images_per_s", "first_vector_s", "steady_images_per_s",
            "cpu_ms_per_image", "peak_pss_mb")  # fmt: skip
    row: dict[str, Any] = {k: median([r[k] for r in runs]) for k in keys}
    row["rounds"] = len(runs)
    row["range"] = {
        k: [min(v), max(v)] for k in keys if (v := [r[k] for r in runs if r[k] is not None])
    }
    return row


def render(path: Path) -> int:
    """The rows' medians and the Markdown again, from a results JSON's runs."""
    report = json.loads(path.read_text())
    for block in report["sizes"]:
        for row in block["rows"]:
            row.update(summarize(row["runs"]))
    path.write_text(json.dumps(report, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render)
    reaper = _subreaper()
    logs = args.out / "logs" / ("peers-smoke" if args.smoke else "peers")
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    from benchmarks.images import make_images, photo_paths, photo_set_tag

    info = machine_info(args.cores)
    args.cache = Path(tempfile.mkdtemp(prefix="peers-cache-"))
    command = "python -m benchmarks.peers " + shlex.join(sys.argv[1:] if argv is None else argv)
    info.update(command=command, model=args.model, seed=args.seed, batch=args.batch,
                daft_omp=args.daft_omp or "unset", photos=photo_set_tag(photo_paths()),
                cpu_sample_s=0.1, subreaper=reaper)  # fmt: skip
    print(f"featurex against its peers: {args.model}, sizes {args.sizes}, rounds "
          f"{args.round_list}, on {info['cpu']} ({info['uptime']}); logs in {logs}",
          flush=True)  # fmt: skip
    skipped: list[str] = []
    failed: list[dict[str, Any]] = []
    sizes: list[dict[str, Any]] = []
    for size, rounds in zip(args.size_list, args.round_list, strict=True):
        folder = make_images(size, args.data, args.seed)
        wanted = args.large_row_list if size > 1024 else args.row_list
        entries, notes = runnable(wanted, info["cpu_flags"], _installed)
        for note in (n for n in notes if n not in skipped):
            print(f"  {note}", flush=True)
            skipped.append(note)
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {e: [] for e in entries}
        print(f"  {size} images, {rounds} round(s)", flush=True)
        for round_ in range(rounds):
            turn = round_ * len(entries) // max(rounds, 1)
            for peer, precision in entries[turn:] + entries[:turn]:
                name = f"{size}-{peer}-{precision}-r{round_ + 1}"
                load = os.getloadavg()[0]
                print(f"    {name} (load {load:.1f}) ...", end=" ", flush=True)
                try:
                    run = run_row(peer, precision, folder, size, args, logs / f"{name}.log")
                except Exception as exc:  # one broken tool must not cost the others
                    print(f"FAILED ({str(exc).splitlines()[0]})", flush=True)
                    failed.append({"size": size, "peer": peer, "precision": precision,
                                   "round": round_ + 1, "error": str(exc)})  # fmt: skip
                    continue
                run.update(round=round_ + 1, loadavg_before=load)
                first = run["first_vector_s"]
                print(f"{run['wall_s']:.1f} s, first vector {_num(first, 1)} s, steady "
                      f"{_num(run['steady_images_per_s'], 1)} images/s", flush=True)  # fmt: skip
                runs[peer, precision].append(run)
        rows = []
        for (peer, precision), done in runs.items():
            if not done:
                continue
            features: dict[str, list[float]] = next(
                (r["features"] for r in done if r.get("features")), {}
            )
            for r in done:
                r.pop("features", None)
            rows.append({"peer": peer, "precision": precision, **summarize(done),
                         "runs": done, "features": features})  # fmt: skip
        agree = agreement(rows)
        for row in rows:
            row.pop("features")
        sizes.append({"images": size, "rounds": rounds, "rows": rows, "agreement": agree})
        _write(args, info, sizes, [], skipped, failed)  # a run cut short keeps what it has
    boot = startup(args, make_images(min(args.size_list), args.data, args.seed), logs)
    info["loadavg_at_end"] = os.getloadavg()[0]
    info["uptime_at_end"] = _command(["uptime"])
    _write(args, info, sizes, boot, skipped, failed)
    shutil.rmtree(args.cache, ignore_errors=True)
    name = "peers-smoke" if args.smoke else "peers"
    print((args.out / f"{name}.md").read_text(), flush=True)
    return 1 if failed else 0


def _write(
    args: argparse.Namespace,
    info: dict[str, Any],
    sizes: list[dict[str, Any]],
    boot: list[dict[str, Any]],
    skipped: list[str],
    failed: list[dict[str, Any]],
) -> None:
    name = "peers-smoke" if args.smoke else "peers"
    report = {"machine": info, "sizes": sizes, "startup": boot, "skipped": skipped,
              "failed": failed}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(markdown(report))


# ---------------------------------------------------------------- the report


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def label(peer: str, machine: dict[str, Any]) -> str:
    return LABELS[peer].format(version=machine.get(peer) or "", batch=machine.get("batch", 32))


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    versions = ", ".join(
        f"{k} {m[k]}" for k in ("python", "torch", "torchvision", "pyspark", "pyarrow", "pillow",
                                "featurex", "daft", "ray") if m.get(k)
    )  # fmt: skip
    lines = [
        f"# featurex against its peers, {m['date'][:10]}",
        "",
        f"{m['model']} (random init, seed {m['seed']}), JPEGs of 300-1,024 px from "
        f"`benchmarks.images` ({m['photos']}), on {m['cpu']} ({m['cores_used']} cores; ISA: "
        f"{', '.join(m.get('cpu_flags', [])) or 'none of note'}); load average "
        f"{m['loadavg_at_start']:.1f} at the start, "
        f"{m.get('loadavg_at_end', float('nan')):.1f} at the end "
        f"(`uptime` then: {m.get('uptime', '?')}). {m['java']}; {versions}.",
        "",
        f"Command: `{m['command']}`",
        *(["", m["note"]] if m.get("note") else []),
        "",
        "Each figure is the median of the rounds (each round runs every row in a fresh process "
        "tree, in turns, a different one first). Wall: from the launch to the Parquet written. "
        "First vector: when the first unit of work was done (a Spark task's Parquet part file "
        "closed; a Daft or Ray batch's forward pass returned, stamped by the model class; for "
        "`featurex extract`, a chunk committed: 1,000 images by default, its first output). "
        "Steady: images after the first unit over the time from the first unit to the last. "
        "CPU: the whole process tree's user + system time, each process's own time read every "
        f"{m.get('cpu_sample_s', 0.1)} s (pyspark's daemon ignores SIGCHLD, so the kernel's "
        "accounting of reaped children can miss its workers). Memory: the peak of the tree's "
        "summed PSS, sampled every 0.5 s.",
    ]
    for block in report["sizes"]:
        lines += [
            "",
            f"## {block['images']:,} images ({block['rounds']} round(s))",
            "",
            "| tool | precision | whole job, images/s | wall s | first vector, s after launch "
            "| steady images/s | CPU ms per image | peak memory (PSS) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in block["rows"]:
            wall = r["range"].get("wall_s")
            spread = f" ({wall[0]:.1f}-{wall[1]:.1f})" if wall and r["rounds"] > 1 else ""
            lines.append(
                f"| {label(r['peer'], m)} | {r['precision']} | {_num(r['images_per_s'], 2)} "
                f"| {_num(r['wall_s'], 1)}{spread} | {_num(r['first_vector_s'], 1)} "
                f"| {_num(r['steady_images_per_s'], 1)} | {_num(r['cpu_ms_per_image'], 0)} "
                f"| {r['peak_pss_mb'] / 1024:.2f} GB |"
            )
        for f in (f for f in report.get("failed", []) if f["size"] == block["images"]):
            lines.append(
                f"| {label(f['peer'], m)} | {f['precision']} | failed in round {f['round']}: "
                f"{f['error'].splitlines()[0]} | | | | | |"
            )
        lines += _ratios(block)
        if block["agreement"]:
            against = block["agreement"][0]["against"]
            how = (
                "the same function by hand: eager torchvision, Pillow"
                if "row_udf" in against
                else "the row UDF did not run"
            )
            lines += [
                "",
                f"Features against {against} ({how}) on the first "
                f"{block['agreement'][0]['images']} images by name:",
                "",
                "| tool | precision | min cosine | max relative L2 difference |",
                "|---|---|---:|---:|",
            ]
            lines += [
                f"| {label(a['peer'], m)} | {a['precision']} | {a['min_cosine']:.6f} "
                f"| {a['max_rel_dev']:.1e} |"
                for a in block["agreement"]
            ]
    lines += _startup_tables(report)
    lines += ["", "## Threads", ""]
    shown = {r["peer"] for b in report["sizes"] for r in b["rows"]}
    for peer in (p for p in PEERS if p in shown):
        text = THREADS[peer].format(omp=m.get("daft_omp", 1))
        lines.append(f"- {label(peer, m)}: {text}{_seen_threads(report, peer)}")
    if report.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(report["skipped"]) + "."]
    return "\n".join(lines) + "\n"


def _seen_threads(report: dict[str, Any], peer: str) -> str:
    """What the model class saw: its instances and processes, torch's threads in the
    threads that ran its batches, OMP_NUM_THREADS."""
    seen = set()
    for block in report["sizes"]:
        for row in (r for r in block["rows"] if r["peer"] == peer):
            for run in row["runs"]:
                inits = [e for e in run.get("events", []) if e["what"] == "init_end"]
                if not inits:
                    continue
                pids = {e["pid"] for e in inits}
                where = "the driver process" if pids == {run.get("pid")} else (
                    f"{len(pids)} process(es) of their own"
                )  # fmt: skip
                threads = sorted(set(run.get("batch_threads", [])))
                seen.add(f"{len(inits)} instance(s) in {where}, torch threads "
                         f"{'/'.join(map(str, threads)) or '?'} in their batches, "
                         f"OMP_NUM_THREADS={inits[0]['omp'] or 'unset'}")  # fmt: skip
    return f" Seen by the model class: {'; '.join(sorted(seen))}." if seen else ""


def _ratios(block: dict[str, Any]) -> list[str]:
    """featurex's whole job against the faster of Daft and Ray Data, per precision."""
    by = {(r["peer"], r["precision"]): r for r in block["rows"]}
    out = []
    for precision in ("fp32", "bf16"):
        fx = by.get(("featurex", precision))
        peers = [by[p, precision] for p in ("daft", "ray") if (p, precision) in by]
        if not fx or not peers:
            continue
        best = max(peers, key=lambda r: r["images_per_s"])
        parts = [f"whole job {fx['images_per_s'] / best['images_per_s']:.2f}x {best['peer']}"]
        if fx["first_vector_s"] and best["first_vector_s"]:
            ratio = fx["first_vector_s"] / best["first_vector_s"]
            parts.append(f"time to the first vector {ratio:.2f}x {best['peer']}'s")
        fx_steady, best_steady = fx["steady_images_per_s"], best["steady_images_per_s"]
        if fx_steady and best_steady:
            parts.append(f"steady {fx_steady / best_steady:.2f}x")
        out.append(f"featurex {precision} against the faster peer of the two: {', '.join(parts)}.")
    return ["", *out] if out else []


STEP_NAMES = {
    "interpreter": "Python start (interpreter, before the first line)",
    "deps": "import pandas, pyarrow, pyspark (a worker has them from pyspark's daemon)",
    "torch": "import torch",
    "torchvision": "import torchvision",
    "featurex": "import featurex (beyond torch and torchvision)",
    "loaded": "model: build (random init) + graph optimization, build alone, or cached graph",
    "first_batch": "first batch (decode + forward)",
    "second_batch": "second batch",
}


def _startup_tables(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    fx = next(
        (
            r
            for b in report["sizes"]
            for r in b["rows"]
            if (r["peer"], r["precision"]) == ("featurex", "fp32")
        ),
        None,
    )
    if fx:
        run = sorted(fx["runs"], key=lambda r: r["wall_s"])[(len(fx["runs"]) - 1) // 2]
        s, w = run["stamps"], run["workers"]
        loaded = run["models_loaded_s"]
        points = [
            ("Python start, driver imports (pyspark, featurex with torch)", s.get("imported")),
            ("JVM + Spark session ready", s.get("session")),
            ("files listed (`binaryFile` load)", s.get("listed")),
            ("column made, job submitted", s.get("submitted")),
            ("first Python worker process (pyspark's daemon) started", w["daemon_started_s"]),
            *(
                (f"Python worker {i + 1} forked", t)
                for i, t in enumerate(w["workers_started_s"][:2])
            ),
            *((f"model {i + 1} loaded in its worker (INFO log)", t) for i, t in enumerate(loaded)),
            ("first task done: the first vectors", run["first_vector_s"]),
            ("last task done", run["last_unit_s"]),
            ("Parquet written (job committed)", s.get("written")),
            ("process exit", run["exit_s"]),
        ]
        lines += [
            "",
            f"## featurex's start-up, one run ({fx['runs'][0]['images']:,} images, fp32, "
            f"round {run['round']}, the median wall)",
            "",
            "Seconds after the launch, and since the step before (the worker lines come from "
            "the process tree's creation times and featurex's INFO log, stamped on arrival):",
            "",
            "| step | s after launch | since the step before |",
            "|---|---:|---:|",
        ]
        before = 0.0
        for name, at in sorted((p for p in points if p[1] is not None), key=lambda p: p[1]):
            lines.append(f"| {name} | {at:.2f} | {at - before:+.2f} |")
            before = at
    boot = [b for b in report.get("startup", []) if "steps" in b]
    if boot:
        whiches = [b["which"] for b in boot]
        lines += [
            "",
            "featurex's engine in a plain process, as in a worker (OMP_NUM_THREADS=1), "
            "seconds per step (`-eager`: `optimize=False`; `-cached`: the optimized graph "
            "from the disk cache that the column before filled, so no torchvision import):",
            "",
            "| step | " + " | ".join(whiches) + " |",
            "|---|" + "---:|" * len(whiches),
        ]
        for step, text in STEP_NAMES.items():
            cells = [_num(b["steps"].get(step), 2) for b in boot]
            lines.append(f"| {text} | " + " | ".join(cells) + " |")
        lines.append("| batch size | " + " | ".join(str(b["batch"]) for b in boot) + " |")
    return lines


# ---------------------------------------------------------------- the children


_BUILD = threading.Lock()  # a seeded init draws from torch's one generator: one at a time


def record(path: str, **fields: Any) -> None:
    """One line of a tool's own account (a batch done, its model loaded), from any process."""
    with open(path, "a") as file:
        file.write(json.dumps({"t": time.time(), "pid": os.getpid(), **fields}) + "\n")


class Embedder:
    """What a Daft or Ray Data user writes: the model built once per instance (seeded random
    init, classifier removed: `benchmarks.variants.build_model`, as the row UDF), the
    transforms torchvision ships with the weights, on Pillow images, a batched forward pass;
    bf16 as a knowledgeable user adds it (autocast, channels_last)."""

    def __init__(self, model: str, seed: int, precision: str, units: str) -> None:
        record(units, what="init_start")
        import torch
        import torchvision

        from benchmarks.variants import build_model

        self.units, self.bf16 = units, precision == "bf16"
        with _BUILD:  # Daft builds its instances in threads at once: the same weights in each
            self.net = build_model(model, seed)
        if self.bf16:
            self.net = self.net.to(memory_format=torch.channels_last)
        weights = torchvision.models.get_model_weights(model)
        self.transform = weights.IMAGENET1K_V1.transforms()
        omp = os.environ.get("OMP_NUM_THREADS")
        record(units, what="init_end", torch_threads=torch.get_num_threads(), omp=omp)

    def pixels(self, image: Any) -> Any:
        from PIL import Image

        return self.transform(Image.fromarray(image))

    def forward(self, batch: Any) -> Any:
        import torch

        if self.bf16:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            out = self.net(batch).float().numpy()
        record(self.units, what="batch", n=len(out), torch_threads=torch.get_num_threads())
        return out


def _feature_dim(model: str) -> int:
    import torch
    import torchvision

    with torch.device("meta"):
        net = torchvision.models.get_model(model, weights=None)
    return int([m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1].in_features)


def _spark_child(spec: dict[str, Any], stamps: dict[str, float]) -> None:
    """featurex's `image_features`, or the seed's row UDF, over `binaryFile` on local[N]."""
    import pyspark.sql  # noqa: F401

    if spec["peer"] != "row_udf":
        import featurex  # as a user's script does, before the session
    from benchmarks.variants import feature_column, session

    stamps["imported"] = time.time()
    spark = session(spec["cores"])
    stamps["session"] = time.time()
    files = spark.read.format("binaryFile").load(spec["folder"])
    stamps["listed"] = time.time()
    if spec["peer"] != "row_udf":
        model, precision = spec["model"], spec["precision"]
        column = featurex.image_features(
            "content", model=model, weights=None, seed=spec["seed"], precision=precision
        )
    else:
        column = feature_column(spark, "row_udf", spec["model"], None, spec["seed"])
    stamps["submitted"] = time.time()
    files.select("path", column.alias("features")).write.parquet(spec["out"])
    stamps["written"] = time.time()
    spark.stop()


def _daft_child(spec: dict[str, Any], stamps: dict[str, float]) -> None:
    """Daft's native runner: a `daft.cls` with a batch method, `download().decode_image()`."""
    import daft
    from daft import DataType, col

    stamps["imported"] = time.time()
    dim = _feature_dim(spec["model"])

    @daft.cls
    class Features:
        def __init__(self, model: str, seed: int, precision: str, units: str) -> None:
            self.embedder = Embedder(model, seed, precision, units)

        @daft.method.batch(
            return_dtype=DataType.embedding(DataType.float32(), dim), batch_size=spec["batch"]
        )
        def __call__(self, images: Any) -> Any:
            import torch

            pixels = [self.embedder.pixels(a) for a in images.to_pylist()]
            return self.embedder.forward(torch.stack(pixels))

    features = Features(spec["model"], spec["seed"], spec["precision"], spec["units"])
    df = daft.from_glob_path(os.path.join(spec["folder"], "*.jpg"))
    df = df.with_column("image", col("path").download().decode_image(mode="RGB"))
    df.select("path", features(col("image")).alias("features")).write_parquet(spec["out"])
    stamps["written"] = time.time()


class RayFeatures:
    """Ray Data's callable class for `map_batches`."""

    def __init__(self, model: str, seed: int, precision: str, units: str) -> None:
        self.embedder = Embedder(model, seed, precision, units)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import torch

        out = self.embedder.forward(torch.from_numpy(batch["pixels"]))
        return {"path": batch["path"], "features": out}


_TRANSFORM: list[Any] = []


def ray_preprocess(row: dict[str, Any]) -> dict[str, Any]:
    """Ray Data's `map`: the weights' transforms on one decoded image."""
    from PIL import Image

    if not _TRANSFORM:
        import torchvision

        model = os.environ["PEERS_MODEL"]
        _TRANSFORM.append(torchvision.models.get_model_weights(model).IMAGENET1K_V1.transforms())
    return {"path": row["path"], "pixels": _TRANSFORM[0](Image.fromarray(row["image"])).numpy()}


def _ray_child(spec: dict[str, Any], stamps: dict[str, float]) -> None:
    """Ray Data: `read_images` + `map` + `map_batches(class, batch_size, 1 actor)`."""
    import ray
    import ray.data

    stamps["imported"] = time.time()
    os.environ["PEERS_MODEL"] = spec["model"]  # the workers inherit it from ray.init
    ray.init(num_cpus=spec["cores"], include_dashboard=False)
    stamps["session"] = time.time()
    ds = ray.data.read_images(spec["folder"], mode="RGB", include_paths=True)
    ds = ds.map(ray_preprocess).map_batches(
        RayFeatures,
        fn_constructor_kwargs={"model": spec["model"], "seed": spec["seed"],
                               "precision": spec["precision"], "units": spec["units"]},
        batch_size=spec["batch"],
        compute=ray.data.ActorPoolStrategy(size=1),  # `concurrency=1` before Ray 2.51
    )  # fmt: skip
    ds.write_parquet(spec["out"])
    stamps["written"] = time.time()
    ray.shutdown()


def _startup_child(spec: dict[str, Any], stamps: dict[str, float]) -> None:
    """featurex's engine as a Spark worker starts it, step by step."""
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401
    import pyspark.sql  # noqa: F401

    stamps["deps"] = time.time()
    import torch

    stamps["torch"] = time.time()
    if not spec.get("cached"):  # a load from the graph cache does without torchvision
        import torchvision  # noqa: F401

    stamps["torchvision"] = time.time()
    import featurex as fx

    stamps["featurex"] = time.time()
    torch.set_num_threads(1)
    extractor = fx.FeatureExtractor(spec["model"], weights=None, seed=spec["seed"],
                                    precision=spec["precision"],
                                    optimize=None if spec["optimize"] else False)  # fmt: skip
    _ = extractor.loaded
    stamps["loaded"] = time.time()
    batch = extractor.batch_size
    images = [p.read_bytes() for p in sorted(Path(spec["folder"]).glob("*.jpg"))[: 2 * batch]]
    extractor.extract(images[:batch])
    stamps["first_batch"] = time.time()
    extractor.extract(images[batch:])
    stamps["second_batch"] = time.time()
    stamps["batch"] = batch


def child(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    stamps = {"start": STARTED}
    runner = {"featurex": _spark_child, "featurex_cold": _spark_child, "row_udf": _spark_child,
              "daft": _daft_child,
              "ray": _ray_child, "startup": _startup_child}[spec["peer"]]  # fmt: skip
    runner(spec, stamps)
    Path(result_path).write_text(json.dumps({"stamps": stamps, "pid": os.getpid()}))
    return 0


if __name__ == "__main__":
    # Run the imported module, not __main__: Ray and Daft then pickle the classes above by
    # reference (the workers import benchmarks.peers from PYTHONPATH).
    from benchmarks import peers

    peers.STARTED = STARTED
    if sys.argv[1:2] == ["child"]:
        sys.exit(peers.child(*sys.argv[2:4]))
    sys.exit(peers.main())
