"""featurex.similar on local Spark against brute force in numpy: pairs, groups, neighbours,
bad input, the recall measure and `featurex dedup`. Small tables, few Spark jobs."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import featurex as fx
from featurex import cli
from featurex.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
D = 24
THRESHOLD = 0.95


def _rotate(u: np.ndarray, v: np.ndarray, cosine: float) -> np.ndarray:
    """The unit vector at `cosine` from u, towards v."""
    w = v - (v @ u) * u
    w /= np.linalg.norm(w)
    return np.asarray(cosine * u + math.sqrt(1 - cosine**2) * w)


def _planted(seed: int = 7) -> tuple[list[str], np.ndarray]:
    """Six clusters of loose points (cosine about 0.6 to each other), with planted groups:
    copies at cosine 0.97-0.99, and chains A~B~C whose ends are at 0.92 (below 0.95)."""
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    for _ in range(6):
        center = rng.normal(size=D)
        center /= np.linalg.norm(center)
        for _ in range(14):
            anchor = _rotate(center, rng.normal(size=D), 0.6)
            rows.append(anchor)
            kind = rng.integers(4)
            if kind == 1:  # copies
                for _ in range(rng.integers(1, 3)):
                    rows.append(_rotate(anchor, rng.normal(size=D), rng.uniform(0.97, 0.99)))
            elif kind == 2:  # a chain: ends below the threshold, each link above
                end = _rotate(anchor, rng.normal(size=D), 0.92)
                middle = (anchor + end) / np.linalg.norm(anchor + end)
                rows += [middle, end]
    x = np.array(rows, np.float32) * rng.uniform(0.5, 3, size=(len(rows), 1)).astype(np.float32)
    order = rng.permutation(len(x))
    return [f"img{i:03d}" for i in range(len(x))], x[order]


def _truth(ids: list[str], x: np.ndarray) -> dict[tuple[str, str], float]:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u @ u.T
    i, j = np.nonzero(np.triu(s >= THRESHOLD, 1))
    return {
        (min(ids[a], ids[b]), max(ids[a], ids[b])): float(s[a, b])
        for a, b in zip(i, j, strict=True)
    }


def _components(ids: list[str], pairs: set[tuple[str, str]]) -> dict[str, str]:
    parent = {i: i for i in ids}

    def find(i: str) -> str:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return {i: find(i) for i in ids}


@pytest.fixture(scope="module")
def planted(spark: Any) -> tuple[Any, list[str], np.ndarray, dict[tuple[str, str], float]]:
    ids, x = _planted()
    rows: list[tuple[str, list[float] | None, float]] = [
        (i, [float(v) for v in vec], float(n))
        for n, (i, vec) in enumerate(zip(ids, x, strict=True))
    ]
    # A failed image (null vector) and an unusable vector (NaN): never compared.
    nan = [1.0] * D
    nan[3] = float("nan")
    rows += [("zz-null", None, 0.0), ("zz-nan", nan, 0.0)]
    table = spark.createDataFrame(rows, "path string, features array<float>, size double")
    return table, ids, x, _truth(ids, x)


def _pairs(frame: Any) -> dict[tuple[str, str], float]:
    return {(r["a"], r["b"]): r["cosine"] for r in frame.collect()}


def test_pairs_on_the_all_pairs_path_are_brute_force(planted: Any) -> None:
    table, _, _, truth = planted
    got = _pairs(fx.similar_pairs(table, THRESHOLD))
    assert got.keys() == truth.keys()
    assert all(a < b for a, b in got)
    assert max(abs(got[p] - truth[p]) for p in truth) < 1e-5
    assert len(truth) > 40  # copies and chains were planted


def test_partitioned_split_path_and_pair_recall(planted: Any) -> None:
    table, ids, _, truth = planted
    # Every row in every cell, blocks of 16 rows: the split path and the dedup of pairs
    # that meet in several cells, which must still give every pair exactly once.
    every = fx.similar_pairs(table, THRESHOLD, cells=5, probes=5, block_rows=16)
    rows = every.collect()
    assert len(rows) == len(truth)
    assert {(r["a"], r["b"]) for r in rows} == truth.keys()
    # Two cells per row: no false positive; pair_recall over every row counts exactly.
    some = fx.similar_pairs(table, THRESHOLD, cells=6, probes=2, block_rows=16).cache()
    found = _pairs(some)
    assert found.keys() <= truth.keys()
    recall = fx.pair_recall(table, some, THRESHOLD, sample=10_000)
    assert (recall.sample, recall.expected, recall.found) == (len(ids), len(truth), len(found))
    assert recall.recall == len(found) / len(truth) > 0.8


def test_groups_are_the_connected_components(planted: Any) -> None:
    table, ids, x, truth = planted
    groups = {r["path"]: r for r in fx.near_duplicates(table, THRESHOLD).collect()}
    oracle = _components(ids, set(truth))
    assert len(groups) == len(ids) + 2  # one row per input row
    assert {i: groups[i]["group_id"] for i in ids} == oracle
    assert all(groups[i]["is_representative"] == (oracle[i] == i) for i in ids)
    assert groups["zz-null"].asDict() == {"path": "zz-null", "group_id": None,
                                          "is_representative": False}  # fmt: skip
    assert groups["zz-nan"]["group_id"] is None
    # A chain A~B~C is one group though A and C are below the threshold.
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    chains = [
        (a, c)
        for (a, b) in truth
        for (b2, c) in truth
        if b == b2 and (a, c) not in truth
        and u[ids.index(a)] @ u[ids.index(c)] < 0.93
    ]  # fmt: skip
    assert chains and all(groups[a]["group_id"] == groups[c]["group_id"] for a, c in chains)


def test_representative_is_the_largest_value_of_a_column(planted: Any) -> None:
    table, ids, _, truth = planted
    groups = fx.near_duplicates(table, THRESHOLD, representative="size", cells=4, probes=4)
    got = {r["path"]: r["group_id"] for r in groups.collect()}
    members: dict[str, list[str]] = {}
    for i, root in _components(ids, set(truth)).items():
        members.setdefault(root, []).append(i)
    size = {i: n for n, i in enumerate(ids)}  # the size column is the row number
    for group in members.values():
        best = max(group, key=lambda i: size[i])
        assert {got[i] for i in group} == {best}


def test_nearest_neighbors_exact_and_partitioned_are_brute_force(planted: Any) -> None:
    table, ids, x, _ = planted
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    queries = table.where("path < 'img020'")
    k = 3
    want = {}
    for q in range(len(ids)):
        if ids[q] < "img020":
            s = u @ u[q]
            s[q] = -np.inf  # not itself
            want[ids[q]] = [ids[j] for j in np.argsort(-s)[:k]]
    for kwargs in ({}, {"cells": 4, "probes": 2, "query_probes": 4, "block_rows": 16}):
        got: dict[str, list[tuple[int, str, float]]] = {}
        for r in fx.nearest_neighbors(queries, table, k=k, **kwargs).collect():
            got.setdefault(r["query"], []).append((r["rank"], r["neighbor"], r["cosine"]))
        assert {q: {n for _, n, _ in v} for q, v in got.items()} == {
            q: set(n) for q, n in want.items()
        }, kwargs
        for v in got.values():  # ranks 1..k, cosine descending
            ranked = sorted(v)
            assert [rank for rank, _, _ in ranked] == [1, 2, 3]
            assert [c for _, _, c in ranked] == sorted((c for _, _, c in ranked), reverse=True)


def test_bad_input_fails_on_the_driver_naming_the_value(spark: Any, planted: Any) -> None:
    table = planted[0]
    cases: list[tuple[Any, str]] = [
        (lambda: fx.similar_pairs(table, 0.0),
         "threshold=0.0 is outside (0, 1]: pass a cosine similarity, e.g. 0.95 for "
         "near-duplicates"),
        (lambda: fx.near_duplicates(table, 1.5),
         "threshold=1.5 is outside (0, 1]: pass a cosine similarity, e.g. 0.95 for "
         "near-duplicates"),
        (lambda: fx.similar_pairs(table, features="vec"),
         "table has no column 'vec' (its columns: path, features, size): pass features= "
         "naming one of them"),
        (lambda: fx.similar_pairs(table, features="size"),
         "table's column 'size' has Spark type double: pass features= naming a column of "
         "vectors (array<float>, as featurex extract writes, or an MLlib vector)"),
        (lambda: fx.nearest_neighbors(table, table, k=0),
         "k=0: k must be an integer >= 1 (the number of neighbours per query)"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(ConfigError) as caught:
            call()
        assert str(caught.value) == message
    bad = spark.createDataFrame(
        [("a", [1.0, 0.0]), ("b", [0.0, 1.0, 0.0]), ("a", [1.0, 1.0])],
        "path string, features array<float>",
    )
    with pytest.raises(ConfigError) as caught:
        fx.similar_pairs(bad)
    assert str(caught.value) == (
        "duplicate id 'a' in column 'path' of table (1 row repeats an id): ids must be unique; "
        "pass id= naming a unique column, or deduplicate first, e.g. "
        "table.dropDuplicates(['path'])"
    )
    with pytest.raises(ConfigError) as caught:
        fx.similar_pairs(bad.where("features[1] != 1.0 or size(features) = 3"))
    assert str(caught.value) == (
        "vectors in column 'features' of table have different lengths (2 and 3): compare "
        "vectors of one model; keep one length first, e.g. table.where(F.size('features') == 3)"
    )


def test_cli_dedup_end_to_end(spark: Any, planted: Any, tmp_path: Path, capsys: Any) -> None:
    table, ids, _, truth = planted
    source, out = tmp_path / "features.parquet", tmp_path / "groups"
    table.drop("size").withColumn("error", table["path"].substr(0, 0)).write.parquet(str(source))
    assert cli.main(["dedup", str(source), "--output", str(out), "--sample", "40"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    oracle = _components(ids, set(truth))
    sizes: dict[str, int] = {}
    for root in oracle.values():
        sizes[root] = sizes.get(root, 0) + 1
    grouped = sum(n for n in sizes.values() if n > 1)
    assert line.startswith(
        f"featurex: {len(ids) + 2} rows, {len(sizes)} groups, {grouped} rows in groups of two "
        f"or more, 2 without a usable vector (group_id null), recall 1.0000 ("
    ), line
    written = {r["path"]: r["group_id"] for r in spark.read.parquet(str(out)).collect()}
    assert {i: written[i] for i in ids} == oracle
    # Bad arguments: one line, exit 2, before Spark reads anything.
    assert cli.main(["dedup", str(source), "--output", str(out)]) == 2
    assert cli.main(["dedup", str(source), "-o", str(tmp_path / "x"), "--threshold", "2"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"featurex: error: --output {out} exists: pass --overwrite to replace it",
        "featurex: error: --threshold 2.0 is outside (0, 1]: pass a cosine similarity, e.g. "
        "0.95 for near-duplicates",
    ]


def test_similar_is_loaded_on_first_use_and_never_imports_torch() -> None:
    source = (ROOT / "featurex" / "similar.py").read_text()
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom)
    }
    assert "torch" not in imported
    code = "import sys, featurex; print('featurex.similar' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"
