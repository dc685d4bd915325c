"""Spark jobs for the cluster and worker-fault tests, run as a driver process of their own
(a process holds one SparkContext, and the test session already has its local[2] one):

    python tests/spark_jobs.py MASTER IMAGES OUT [--jobs features,clean,faulty] [--max-failures N]

Each job reads IMAGES with binaryFile into 3 partitions of 4 images and writes Parquet
(path, features) under OUT:

  features.parquet  fx.image_features("content", model="resnet18", weights=None)
  clean.parquet     the tripwire model (resnet18, seed 0), which never fires
  faulty.parquet    the same model and job, but the first task of the job to reach its second
                    inference batch SIGKILLs its own Python worker; the retry goes through
  chunked/          the steps of `featurex extract --resume --commit-every 5`, in two runs:
                    img0* first, then every image (chunked.json: what each run did)

The tripwire model logs every load and forward pass to OUT/events/<job>-<pid>.jsonl, and
the worker it kills writes OUT/kill.json just before dying. OUT/app.json names the
application. This file is the driver's __main__, so cloudpickle ships the model factory
below to the workers by value.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

JOBS = ("features", "clean", "faulty", "chunked")
ROWS_PER_BATCH = 2  # inference batch = Arrow batch: 2 batches per 4-image task


def _task() -> dict[str, int]:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return {}
    return {"stage": ctx.stageId(), "partition": ctx.partitionId(), "attempt": ctx.attemptNumber()}


def _log(out: str, job: str, event: dict[str, object]) -> None:
    record = {"pid": os.getpid(), **_task(), **event}
    # One small append, closed at once: it survives the SIGKILL that may follow.
    with open(os.path.join(out, "events", f"{job}-{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


class Tripwire(nn.Module):
    """A resnet18 trunk. Armed, the first task of the job (across all workers) to start its
    second batch of images kills its own process, after its first batch went through."""

    def __init__(self, out: str, job: str, armed: bool) -> None:
        super().__init__()
        import torchvision

        import featurex

        self.trunk = torchvision.models.resnet18(weights=None)
        self.trunk.fc = nn.Identity()
        self.out, self.job, self.armed = out, job, armed
        self.rows: dict[tuple[int, ...], int] = {}  # image rows seen per task attempt
        # featurex runs the model at load time (its checks, the feature size) before it
        # publishes it in the worker's cache: until the load count moves, it is not images.
        self.loads_before = featurex.cache_info()["loads"]

    def forward(self, x: Tensor) -> Tensor:
        import featurex

        images = featurex.cache_info()["loads"] > self.loads_before
        task = _task()
        key = tuple(task.values())
        done = self.rows.get(key, 0)
        if self.armed and images and done >= ROWS_PER_BATCH:
            self._maybe_die(task, done)
        out: Tensor = self.trunk(x)
        if images:
            self.rows[key] = done + int(x.shape[0])
        _log(self.out, self.job, {"event": "forward", "images": images, "rows": int(x.shape[0])})
        return out

    def _maybe_die(self, task: dict[str, int], done: int) -> None:
        marker = os.path.join(self.out, "kill.json")
        try:  # atomic: exactly one worker of the job wins
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "rows_before": done, **task}, f)
        os.kill(os.getpid(), signal.SIGKILL)


def _jvm() -> dict[str, object]:
    """The JVM this Python worker serves: the parent of pyspark's daemon, our parent."""
    with open(f"/proc/{os.getppid()}/stat") as f:
        pid = int(f.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        executor = b"CoarseGrainedExecutorBackend" in f.read()
    return {"jvm_pid": pid, "jvm_is_executor": executor}


def tripwire_resnet18(out: str, job: str, armed: bool) -> nn.Module:
    marker_seen = os.path.exists(os.path.join(out, "kill.json"))
    _log(out, job, {"event": "load", "after_kill": marker_seen, **_jvm()})
    return Tripwire(out, job, armed)


def _chunked(spark: SparkSession, images: str, out: str) -> None:
    """The command's resumable run, in this driver: executors write each chunk, the driver
    commits it."""
    from featurex import _runs
    from featurex.config import ExtractorConfig

    config = ExtractorConfig(model="resnet18", weights=None)
    wanted = _runs.fingerprint(config, "bytes", "array")
    runs = []
    for glob in ("img0*", None):
        started = time.perf_counter()
        store = _runs.LocalStore(out)
        _runs.check_output(store, wanted, resume=True, overwrite=False)
        source = _runs.Source(spark, [images], "bytes", glob)
        job = _runs.Run(spark, store, source, _runs.feature_rows(config, "array"))
        todo = _runs.plan(source.listing(), job.prepare(wanted, True, False), every=5)
        totals = job.execute(todo, lambda rows: None)
        runs.append({"total": todo.total, "skipped": todo.skipped, "extracted": totals.extracted,
                     "chunks": totals.chunks})  # fmt: skip
        print(f"job chunked ({glob}): {time.perf_counter() - started:.1f} s", flush=True)
    with open(os.path.join(os.path.dirname(out), "chunked.json"), "w") as f:
        json.dump(runs, f)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("master")
    parser.add_argument("images")
    parser.add_argument("out")
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--max-failures", type=int, default=None)
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "events"), exist_ok=True)

    from pyspark.sql import SparkSession

    import featurex as fx

    builder = (
        SparkSession.builder.master(args.master)
        .appName("featurex-tests-jobs")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "3")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(ROWS_PER_BATCH))
        .config("spark.executorEnv.PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    )
    if args.max_failures is not None:  # local[N,F] sets it in the master string instead
        builder = builder.config("spark.task.maxFailures", str(args.max_failures))
    started = time.perf_counter()
    spark = builder.getOrCreate()
    print(f"session: {time.perf_counter() - started:.1f} s", flush=True)
    spark.sparkContext.setLogLevel("WARN")
    try:
        files = (
            spark.read.format("binaryFile")
            .option("recursiveFileLookup", "true")
            .load(args.images)
            .repartition(3)
        )
        for job in args.jobs.split(","):
            if job == "chunked":
                _chunked(spark, args.images, os.path.join(out, "chunked"))
                continue
            if job == "features":
                col = fx.image_features("content", model="resnet18", weights=None)
            else:
                factory = functools.partial(tripwire_resnet18, out, job, job == "faulty")
                # optimize=False: eager PyTorch, so that forward() above runs on every batch.
                col = fx.image_features("content", model=factory, weights=None,
                                        batch_size=ROWS_PER_BATCH, optimize=False)  # fmt: skip
            started = time.perf_counter()
            files.select("path", col.alias("features")).write.parquet(
                os.path.join(out, f"{job}.parquet")
            )
            print(f"job {job}: {time.perf_counter() - started:.1f} s", flush=True)
        sc = spark.sparkContext
        with open(os.path.join(out, "app.json"), "w") as f:
            json.dump({"master": sc.master, "app_id": sc.applicationId}, f)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
