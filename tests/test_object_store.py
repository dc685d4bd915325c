"""Paths on object storage, read ahead: several reads in flight per task, in a bounded
window, through pyarrow's S3 filesystem, against a slow S3 server on 127.0.0.1."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from images import jpeg
from models_for_tests import tiny_engine

import featurex as fx
from benchmarks.object_store import BUCKET, Requests, s3_server, upload
from featurex.decode import read

FILES = {f"photos/img{i:02d}.jpg": jpeg(64 + 4 * i, 48, seed=i) for i in range(24)}


@pytest.fixture(scope="module")
def bucket() -> Iterator[tuple[list[str], Requests]]:
    with s3_server(delay=0.05) as (_, requests):
        read._FILESYSTEMS.clear()  # a filesystem made for another server's endpoint
        uris = upload(FILES)
        requests.clear()
        yield uris, requests
    read._FILESYSTEMS.clear()


def test_paths_are_read_ahead_in_a_bounded_window(bucket: tuple[list[str], Requests]) -> None:
    uris, requests = bucket
    missing = f"s3://{BUCKET}/photos/missing.jpg"
    inputs = [*uris[:10], missing, *uris[10:]]
    engine = fx.FeatureExtractor(**tiny_engine(read_ahead=8, batch_size=4))
    requests.clear()
    features, errors = engine.extract(inputs)
    want, _ = engine.extract(list(FILES.values()))
    # The rows of the files, in order; the missing one a null and a reason, not a failed task.
    np.testing.assert_allclose(np.delete(features, 10, axis=0), want, rtol=1e-6)
    assert errors.count(None) == 24 and np.isnan(features[10]).all()
    assert errors[10] is not None and errors[10].startswith(f"cannot read {missing!r}: ")
    assert "does not exist" in errors[10]
    # Reads in flight at once: several, never past the window.
    assert 4 <= requests.most_in_flight <= 8, requests.most_in_flight
    # Per file one HEAD (pyarrow's, for the size) and one GET, nothing of featurex's own.
    asked = Counter(requests.log)
    for key in FILES:
        assert asked[("HEAD", f"/{BUCKET}/{key}")] == 1 and asked[("GET", f"/{BUCKET}/{key}")] == 1
    assert sum(asked.values()) == 2 * 24 + 1  # and one HEAD for the missing file


def test_one_read_at_a_time_when_asked(bucket: tuple[list[str], Requests]) -> None:
    uris, requests = bucket
    engine = fx.FeatureExtractor(**tiny_engine(read_ahead=1))
    requests.clear()
    _, errors = engine.extract(uris[:6])
    assert errors == [None] * 6 and requests.most_in_flight == 1
