"""A real Spark standalone cluster (master + worker on 127.0.0.1), and Python workers killed
with SIGKILL in the middle of a job, in local mode with retries and on that cluster.

A process holds one SparkContext and the test session already has its local[2] one, so the
jobs run in drivers of their own (tests/spark_jobs.py) that write Parquet and event logs for
these tests to read. One cluster serves the module: it is started, runs one driver with all
of its jobs, and is stopped (with every process it started) before the tests read anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cluster import StandaloneCluster, alive, run_driver, start_cluster
from models_for_tests import assert_close, reference_features
from pyspark.sql import SparkSession

import featurex as fx

pytestmark = pytest.mark.slow


@dataclass
class ClusterRun:
    cluster: StandaloneCluster
    out: Path
    stderr: str


@pytest.fixture(scope="module")
def cluster_run(image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRun]:
    root = tmp_path_factory.mktemp("cluster")
    cluster = start_cluster(root / "spark")
    try:
        driver = run_driver(
            [cluster.url, str(image_dir), str(root / "out"), "--max-failures", "2"],
            cwd=root, context=cluster.log_tails,
        )  # fmt: skip
    finally:
        cluster.stop()  # raises if any process it started is left
    yield ClusterRun(cluster, root / "out", driver.stderr)


def _image_paths(image_dir: Path) -> list[Path]:
    return sorted(p for p in image_dir.rglob("*") if p.is_file())


def _by_path(table: pd.DataFrame | Path) -> pd.Series:
    """A job's features by file path (Spark reports paths as file: URIs)."""
    if isinstance(table, Path):
        table = pd.read_parquet(table)
    paths = table["path"].str.replace("file:", "")
    features: pd.Series = pd.Series(list(table["features"]), index=paths, dtype=object)
    return features


def _matrix(features: pd.Series, paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(features[str(p)], dtype=np.float32) for p in paths])


def test_cluster_features_equal_local_mode_and_torchvision(
    cluster_run: ClusterRun, spark: SparkSession, image_dir: Path
) -> None:
    app = json.loads((cluster_run.out / "app.json").read_text())
    assert app["master"] == cluster_run.cluster.url
    # The executors ran under our worker: it made the application's folder in its work dir.
    assert (cluster_run.cluster.work_dir / app["app_id"]).is_dir()

    paths = _image_paths(image_dir)
    on_cluster = _by_path(cluster_run.out / "features.parquet")
    assert sorted(on_cluster.index) == sorted(map(str, paths))
    cluster_features = _matrix(on_cluster, paths)
    assert cluster_features.shape == (12, 512)

    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    local = files.load(str(image_dir)).select(
        "path", fx.image_features("content", model="resnet18", weights=None).alias("features")
    )
    local_features = _matrix(_by_path(local.toPandas()), paths)
    assert_close(cluster_features, local_features, rtol=1e-5)
    assert_close(cluster_features, reference_features([p.read_bytes() for p in paths]))


def test_cluster_ran_on_executors_and_left_no_process(cluster_run: ClusterRun) -> None:
    loads = [e for e in _events(cluster_run.out, "faulty") if e["event"] == "load"]
    # The Python workers served executor JVMs of our worker, not the driver...
    assert loads and all(e["jvm_is_executor"] for e in loads), loads
    # ... and after stop() nothing is left: master, worker, executors, Python workers.
    cluster = cluster_run.cluster
    pids = {cluster.master.pid, cluster.worker.pid} | {e["jvm_pid"] for e in loads}
    pids |= {e["pid"] for e in loads}
    assert cluster.master.poll() is not None and cluster.worker.poll() is not None
    assert not alive(pids), alive(pids)


def test_chunked_resumable_run_on_the_cluster(cluster_run: ClusterRun, image_dir: Path) -> None:
    # img0* (10 images) in chunks of 5, then all 12: the second run did only the other 2.
    runs = json.loads((cluster_run.out / "chunked.json").read_text())
    assert runs == [{"total": 10, "skipped": 0, "extracted": 10, "chunks": 2},
                    {"total": 12, "skipped": 10, "extracted": 2, "chunks": 1}]  # fmt: skip
    chunked = cluster_run.out / "chunked"
    assert sorted(p.name for p in chunked.glob("*.parquet")) == [
        "chunk-000001.parquet",
        "chunk-000002.parquet",
        "chunk-000003.parquet",
    ]
    paths = _image_paths(image_dir)
    features = _by_path(chunked)
    assert sorted(features.index) == sorted(map(str, paths))  # each image once
    expected = _matrix(_by_path(cluster_run.out / "features.parquet"), paths)
    assert_close(_matrix(features, paths), expected, rtol=1e-5)


def test_python_worker_killed_on_the_cluster_is_retried(
    cluster_run: ClusterRun, image_dir: Path
) -> None:
    _check_fault_run(cluster_run.out, image_dir, cluster_run.stderr)


def test_python_worker_killed_in_local_mode_is_retried(image_dir: Path, tmp_path: Path) -> None:
    # local[2,4]: two cores, and up to four attempts per task.
    out = tmp_path / "out"
    driver = run_driver(["local[2,4]", str(image_dir), str(out), "--jobs", "clean,faulty"],
                        cwd=tmp_path)  # fmt: skip
    _check_fault_run(out, image_dir, driver.stderr)


def _events(out: Path, job: str) -> list[dict[str, Any]]:
    lines = [line for f in out.glob(f"events/{job}-*.jsonl") for line in f.read_text().splitlines()]
    return [json.loads(line) for line in lines]


def _check_fault_run(out: Path, image_dir: Path, driver_stderr: str) -> None:
    # The kill happened: one worker claimed the marker and SIGKILLed itself, Spark saw the
    # crash, and the task was run again.
    kill = json.loads((out / "kill.json").read_text())
    assert kill["attempt"] == 0
    assert "Python worker exited unexpectedly (crashed)" in driver_stderr
    events = _events(out, "faulty")
    task = (kill["stage"], kill["partition"])

    def attempt_of(e: dict[str, Any]) -> int | None:
        return e["attempt"] if (e["stage"], e["partition"]) == task else None

    killed = [e for e in events if attempt_of(e) == 0]
    assert {e["pid"] for e in killed} == {kill["pid"]}
    # ... after its first batch of 2 images had gone through the model (not at load time).
    assert [e["rows"] for e in killed if e.get("images")] == [2] == [kill["rows_before"]]
    # The retry, in another process, ran both batches of the task.
    retried = [e for e in events if attempt_of(e) == 1 and e.get("images")]
    assert [e["rows"] for e in retried] == [2, 2]
    assert kill["pid"] not in {e["pid"] for e in retried}

    # Each process loaded the model once; a fresh Python worker loaded it after the kill.
    loads = [e for e in events if e["event"] == "load"]
    worker_pids = {e["pid"] for e in events}
    assert sorted(e["pid"] for e in loads) == sorted(worker_pids)
    assert kill["pid"] in worker_pids and len(worker_pids) >= 2
    assert any(e["after_kill"] for e in loads), loads

    # Every input row exactly once, with the features of a clean run of the same job.
    paths = _image_paths(image_dir)
    faulty = pd.read_parquet(out / "faulty.parquet")
    assert len(faulty) == len(paths) == 12
    assert sorted(faulty["path"].str.replace("file:", "")) == sorted(map(str, paths))
    clean = _by_path(out / "clean.parquet")
    assert_close(_matrix(_by_path(out / "faulty.parquet"), paths), _matrix(clean, paths), 1e-6)
    assert_close(_matrix(clean, paths), reference_features([p.read_bytes() for p in paths]))
