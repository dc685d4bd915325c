"""A real Spark standalone cluster on 127.0.0.1: one master and one worker, started with the
pip package's own `bin/spark-class`, and stopped by PID with everything they started.

`master_argv` and `worker_argv` are also the commands of docker/docker-compose.yml
(tests/test_docker.py checks that the compose file uses exactly these argument lists).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyspark

ROOT = Path(__file__).resolve().parents[1]
SPARK_CLASS = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
READY_LINE = "Successfully registered with master"


def master_argv(host: str, port: int, webui_port: int, spark_class: str = SPARK_CLASS) -> list[str]:
    return [spark_class, MASTER_CLASS, "--host", host, "--port", str(port),
            "--webui-port", str(webui_port)]  # fmt: skip


def worker_argv(
    master_url: str,
    host: str,
    work_dir: str,
    webui_port: int,
    cores: int = 2,
    memory: str = "2g",
    spark_class: str = SPARK_CLASS,
) -> list[str]:
    return [spark_class, WORKER_CLASS, master_url, "--host", host, "--cores", str(cores),
            "--memory", memory, "--work-dir", work_dir, "--webui-port", str(webui_port)]  # fmt: skip


def spark_env(**extra: str) -> dict[str, str]:
    """The environment of the daemons and drivers: loopback only, this interpreter on the
    workers, this checkout's featurex first on their path."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable, "PYTHONPATH": path, **extra}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text[-lines:])


@dataclass
class StandaloneCluster:
    """A running master and worker. `stop()` ends them and every process they started."""

    root: Path
    master: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    url: str
    work_dir: Path

    @property
    def logs(self) -> dict[str, Path]:
        return {"master": self.root / "master.log", "worker": self.root / "worker.log"}

    def log_tails(self) -> str:
        parts = [f"--- {name} log ({path}) ---\n{tail(path)}" for name, path in self.logs.items()]
        for stderr in sorted(self.work_dir.glob("*/*/stderr")):  # executors' own logs
            parts.append(f"--- executor {stderr.parent.name} ---\n{tail(stderr, 15)}")
        return "\n".join(parts)

    def processes(self) -> set[int]:
        """Master, worker, and everything they started: their descendants, and any process
        running in the worker's work dir (executor JVMs and their Python workers, even if
        orphaned: pyspark's daemon moves itself into a process group of its own)."""
        roots = {self.master.pid, self.worker.pid}
        return _descendants(roots) | _with_cwd_under(self.work_dir) | roots

    def stop(self, grace: float = 15.0) -> None:
        pids = self.processes()
        for proc in (self.worker, self.master):  # SIGTERM: the worker kills its executors
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + grace
        for proc in (self.worker, self.master):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        pids |= self.processes()
        for pid in sorted(alive(pids)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in (self.worker, self.master):
            proc.wait(10)
        deadline = time.monotonic() + 10
        while alive(pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = alive(pids | self.processes())
        if left:
            raise RuntimeError(f"cluster processes still running after stop: {_describe(left)}")


def start_cluster(root: Path, timeout: float = 120.0) -> StandaloneCluster:
    """Start a master and a worker under `root`; return once the worker has registered."""
    root.mkdir(parents=True, exist_ok=True)
    work_dir = root / "work"
    work_dir.mkdir(exist_ok=True)
    port, ui, worker_ui = free_port(), free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    env = spark_env()
    with (root / "master.log").open("wb") as mlog:
        master = subprocess.Popen(master_argv("127.0.0.1", port, ui), cwd=root, env=env,
                                  stdin=subprocess.DEVNULL, stdout=mlog, stderr=subprocess.STDOUT)  # fmt: skip
    with (root / "worker.log").open("wb") as wlog:
        worker = subprocess.Popen(
            worker_argv(url, "127.0.0.1", str(work_dir), worker_ui), cwd=root, env=env,
            stdin=subprocess.DEVNULL, stdout=wlog, stderr=subprocess.STDOUT,
        )  # fmt: skip
    cluster = StandaloneCluster(root, master, worker, url, work_dir)
    deadline = time.monotonic() + timeout
    try:
        while READY_LINE not in (root / "worker.log").read_text(errors="replace"):
            dead = [n for n, p in (("master", master), ("worker", worker)) if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{' and '.join(dead)} exited" if dead else f"not ready after {timeout:.0f} s"
                raise RuntimeError(
                    f"Spark standalone cluster at {url} failed to start ({why}; waited for "
                    f"{READY_LINE!r} in the worker log)\n{cluster.log_tails()}"
                )
            time.sleep(0.2)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def run_driver(
    args: Sequence[str], cwd: Path, timeout: float = 400.0, context: Callable[[], str] = str
) -> subprocess.CompletedProcess[str]:
    """Run tests/spark_jobs.py in a process of its own (one SparkContext per process).

    On failure, the error shows the driver's output and `context()` (say, the cluster logs).
    """
    cmd = [sys.executable, str(Path(__file__).with_name("spark_jobs.py")), *args]
    result = subprocess.run(cmd, cwd=cwd, env=spark_env(), capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(
            f"driver {' '.join(args)} exited {result.returncode}\n--- driver stdout ---\n"
            f"{result.stdout[-3000:]}\n--- driver stderr ---\n{result.stderr[-5000:]}\n{context()}"
        )
    return result


def _procs() -> Iterable[tuple[int, int, str]]:
    """(pid, ppid, state) of every process, from /proc."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        yield int(entry.name), int(fields[1]), fields[0]


def _descendants(roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in _procs():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _with_cwd_under(folder: Path) -> set[int]:
    prefix = str(folder.resolve())
    found = set()
    for pid, _, _ in _procs():
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/cwd").startswith(prefix):
                found.add(pid)
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids still running (zombies count as ended: only their parent can reap them)."""
    return {pid for pid, _, state in _procs() if pid in pids and state != "Z"}


def _describe(pids: set[int]) -> str:
    out = []
    for pid in sorted(pids):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmd = "?"
        out.append(f"{pid}: {cmd[:160]}")
    return "; ".join(out)
