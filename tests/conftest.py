from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Spark workers must run this interpreter; local Spark binds to loopback only.
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
sys.path.insert(0, str(Path(__file__).parent))
import images
import models_for_tests

# featurex's disk cache (optimized graphs, torchvision's catalog): one of the session's own,
# empty at the start, so that no run depends on what an earlier one left in ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="featurex-cache-")
os.environ["FEATUREX_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from pyspark import cloudpickle
    from pyspark.sql import SparkSession

    # Test helper modules are not installed on the workers: ship them by value, as a
    # notebook's own functions would be.
    cloudpickle.register_pickle_by_value(models_for_tests)
    cloudpickle.register_pickle_by_value(images)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("featurex-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        # Tables (the README's saveAsTable) go to a temporary folder, not the checkout.
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("warehouse")))
        # A crashed Python worker's traceback goes into the task's error.
        .config("spark.python.worker.faulthandler.enabled", "true")
        # Tests fail jobs on purpose. On pyspark 3.5, when a task is killed (a sibling task
        # failed its job) and stays busy past this timeout (2 s by default: importing torch,
        # loading a model), Spark destroys each Python worker of that task, even one it has
        # already returned to the reuse pool; 3.5 then hands that dead worker to a later task,
        # which fails with "SocketException: Socket is closed" (SPARK-54217; 4.x checks the
        # pool, SPARK-47565): tests/test_platforms.py::test_a_killed_task_leaves_no_dead_python_worker_in_the_pool
        .config("spark.python.task.killTimeout", "60s")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve photos of varied sizes and formats, in nested folders."""
    root = tmp_path_factory.mktemp("images")
    (root / "nested").mkdir()
    for i in range(12):
        w, h = 160 + 37 * i, 120 + 23 * (11 - i)
        folder = root / "nested" if i % 3 == 0 else root
        if i % 4 == 1:
            (folder / f"img{i:02d}.png").write_bytes(images.encode(images.photo(w, h, i), "PNG"))
        else:
            (folder / f"img{i:02d}.jpg").write_bytes(images.jpeg(w, h, i))
    return root
