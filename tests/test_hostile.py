"""Hostile and odd inputs (tests/hostile.py) through real Spark and the engine: every row is
accounted for, nothing hangs, and a decompression bomb is refused before it is allocated."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import hostile
import numpy as np
import pandas as pd
import pytest
from models_for_tests import tiny_engine
from pyspark.sql import DataFrame, Row, SparkSession

import featurex as fx
from featurex.config import DEFAULT_MAX_PIXELS

# The image one row over the default limit is over Pillow's warning threshold too.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
TESTS = Path(__file__).parent
ROOT = TESTS.parent
DIM = 8  # tiny_cnn's feature size


def _python(script: str, timeout: float) -> list[dict[str, object]]:
    """Run a script in a fresh interpreter (tests/ importable); its JSON lines."""
    prelude = (
        f"import sys, json\nsys.path[:0] = [{str(TESTS)!r}, {str(ROOT)!r}]\n"
        "import hostile\nimport numpy as np\nfrom models_for_tests import tiny_engine\n"
        "import featurex as fx\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + script],
        capture_output=True,
        text=True,
        timeout=timeout,  # a hung decode fails the test instead of hanging the suite
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_the_corpus_has_over_20_kinds_of_both_outcomes() -> None:
    cases = hostile.corpus()
    assert hostile.DEFAULT_LIMIT == DEFAULT_MAX_PIXELS
    kinds = {e: sum(c.expected == e for c in cases) for e in ("ok", "error")}
    assert len(cases) >= 40 and kinds["ok"] >= 20 and kinds["error"] >= 20, kinds
    assert all(c.reason for c in cases if c.expected == "error")
    assert 100_000 < len(hostile.bomb()) < 1_000_000  # "a few hundred KB"


def _collect_within(df: DataFrame, seconds: float) -> list[Row]:
    """collect(), failing (and cancelling the job) if it has not finished in time."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["rows"] = df.collect()
        except Exception as exc:  # re-raised in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        df.sparkSession.sparkContext.cancelAllJobs()
        thread.join(30)
        pytest.fail(f"the job did not finish in {seconds} s: an input hung a worker")
    if "error" in result:
        raise result["error"]
    return result["rows"]


@pytest.mark.slow  # 20-30 s on 2 busy cores: the 89 Mpx image and two worker model loads
def test_every_kind_through_spark_keeps_rows_order_and_reasons(spark: SparkSession) -> None:
    cases = hostile.corpus()
    pdf = pd.DataFrame({"id": range(len(cases)), "content": [c.data for c in cases]})
    df = spark.createDataFrame(pdf, "id long, content binary")
    assert df.rdd.getNumPartitions() == 2  # both workers, each across many Arrow batches
    col = fx.image_features("content", with_errors=True, **tiny_engine())
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "3")
    try:
        query = df.select("id", col.alias("r")).select("id", "r.features", "r.error")
        rows = _collect_within(query, 300)
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")

    assert [r["id"] for r in rows] == list(range(len(cases)))
    wrong = []
    for case, row in zip(cases, rows, strict=True):
        features, error = row["features"], row["error"]
        if case.expected == "ok":
            good = error is None and len(features) == DIM and np.isfinite(features).all()
        else:
            good = features is None and bool(error) and re.search(case.reason, error)
        if not good:
            wrong.append((case.name, case.expected, error))
    assert not wrong, wrong

    # The Spark path gives the engine's features (the small inputs, compared in-process).
    small = [i for i, c in enumerate(cases) if c.expected == "ok" and len(c.data or b"") < 20_000]
    want, errors = fx.FeatureExtractor(**tiny_engine()).extract([cases[i].data for i in small])
    assert errors == [None] * len(small)
    got = np.array([rows[i]["features"] for i in small], dtype=np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_no_input_hangs_the_engine() -> None:
    # Each kind alone, timed, in a fresh process that the timeout kills if anything hangs.
    script = """
import time
extractor = fx.FeatureExtractor(**tiny_engine())
extractor.extract([None])  # load the model first
for case in hostile.corpus():
    start = time.perf_counter()
    features, errors = extractor.extract([case.data])
    print(json.dumps({"name": case.name, "seconds": time.perf_counter() - start,
                      "finite": bool(np.isfinite(features).all()), "error": errors[0],
                      "shape": list(features.shape)}))
"""
    results = _python(script, timeout=240)
    cases = {c.name: c for c in hostile.corpus()}
    assert [r["name"] for r in results] == list(cases)
    slowest = max(results, key=lambda r: float(r["seconds"]))
    # The slowest kind is the 89 Mpx image at the limit (about 2 s alone on one core).
    assert float(slowest["seconds"]) < 20, slowest
    for r in results:
        case = cases[str(r["name"])]
        assert r["shape"] == [1, DIM]
        if case.expected == "ok":
            assert r["error"] is None and r["finite"], r
        else:
            assert not r["finite"] and re.search(case.reason, str(r["error"])), r


def test_the_pixel_limit_is_configurable() -> None:
    extractor = fx.FeatureExtractor(**tiny_engine(max_pixels=4_000_000))
    at_limit, over = hostile.limit_cases(4_000_000)
    features, errors = extractor.extract([at_limit.data, over.data])
    assert errors[0] is None and np.isfinite(features[0]).all()
    assert errors[1] == "image too large: 10000x401 = 4010000 pixels, over max_pixels=4000000"
    raised = fx.FeatureExtractor(**tiny_engine(max_pixels=4_010_000))
    assert raised.extract([over.data])[1] == [None]


def test_a_bomb_is_refused_before_its_pixels_are_allocated() -> None:
    # Peak RSS (VmHWM) of a fresh process around each extract: refusing the 400 Mpx bomb
    # must not move it; with max_pixels raised above the bomb, the same bytes do allocate,
    # so the measurement can fail.
    script = """
def peak_mb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM")) / 1024

from images import jpeg
hostile_bytes = [hostile.bomb(), hostile.claims_size(65_500, 65_500)]
extractor = fx.FeatureExtractor(**tiny_engine())
extractor.extract([jpeg(64, 48)])  # model loaded, decode threads started
before = peak_mb()
_, refused = extractor.extract(hostile_bytes * 3)
after_refusal = peak_mb()
raised = fx.FeatureExtractor(**tiny_engine(max_pixels=hostile.BOMB_SIDE ** 2))
_, allowed = raised.extract([hostile.bomb()])
after_allowing = peak_mb()
print(json.dumps(dict(before=before, after_refusal=after_refusal,
                      after_allowing=after_allowing, refused=refused, allowed=allowed)))
"""
    (r,) = _python(script, timeout=240)
    print(f"peak RSS MB: {r}")
    assert all(str(e).startswith("image too large") for e in r["refused"]), r["refused"]
    assert float(r["after_refusal"]) - float(r["before"]) < 8, r
    # Allowed, the bomb decodes (400 MB of grayscale, then RGB) and gives features.
    assert r["allowed"] == [None]
    assert float(r["after_allowing"]) - float(r["after_refusal"]) > 400, r
