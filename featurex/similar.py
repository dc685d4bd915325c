"""From vectors to answers: similar pairs, near-duplicate groups and nearest neighbours.

Everything runs on Spark DataFrames (mapInPandas, groupBy().applyInPandas, joins), so it works
the same under classic Spark and Spark Connect, on pyspark 3.5 and 4.x; the arithmetic is
numpy (no torch: the driver may not have it). Loaded on first use by `featurex`.

How pairs are found (faiss's IVF and SemDeDup do the same off Spark):
1. One aggregate job checks the table (ids unique, one vector length) and counts the rows
   without a usable vector (null, NaN, infinite, zero): those are never compared.
2. A table small enough to compare fully is one cell: every pair is compared, exactly.
   Otherwise spherical k-means on a bounded driver-side sample gives about sqrt(N) centroids,
   and each row goes to its `probes` nearest cells, so that pairs near a border still meet.
3. A cell larger than `block_rows` is split into blocks by a hash of the id; each pair of
   blocks (i <= j) is one task, so no task holds more than two blocks whatever the skew.
4. Each task normalizes nothing (rows arrive unit-length, float32) and runs blocked matrix
   products, emitting only the pairs at or above the threshold. A pair whose rows share
   several cells is emitted only by the lowest of them: kept once, with no extra shuffle.
Every pair returned has its cosine computed exactly; what can be missed is a pair that was
never compared (its rows share no cell). `pair_recall` measures that on a sample.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DataType,
    FloatType,
    IntegerType,
    NumericType,
    StructField,
    StructType,
)

from ._compat import is_column
from ._listing import plural
from ._words import opt
from .errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Recall",
    "VectorStats",
    "near_duplicates",
    "nearest_neighbors",
    "pair_recall",
    "similar_pairs",
    "vector_stats",
]

_LOG = logging.getLogger("featurex.similar")

# A cosine is "at or above the threshold" within float32 rounding: two copies of one vector
# compute to 0.99999994, and threshold=1.0 must still pair them.
_TOLERANCE = 1e-6
_SUB_ROWS = 2048  # rows of one matrix product inside a task: 2048 x block_rows float32
_MAX_CELLS = 4096
_SAMPLE_BYTES = 128 << 20  # the k-means sample the driver holds, at most
_KMEANS_ROUNDS = 10
_MAX_ROUNDS = 64  # connected components: large-star/small-star needs O(log^2 n) rounds


@dataclasses.dataclass(frozen=True)
class VectorStats:
    """What one aggregate job found in a table's vector column."""

    rows: int  # every row of the table
    missing: int  # rows whose vector is null (a failed image): skipped, group_id null
    unusable: int  # NaN, infinite or null elements, or all zeros: reported, never compared
    dim: int  # the vectors' length (0 when no row has a usable vector)

    @property
    def usable(self) -> int:
        return self.rows - self.missing - self.unusable


@dataclasses.dataclass(frozen=True)
class Recall:
    """The share of true pairs that `similar_pairs` found, measured on a sample of rows.

    `expected` pairs at or above the threshold involve the `sample` rows (an exact search of
    each sampled row against the whole table); `found` of them are in the pairs given.
    """

    sample: int
    expected: int
    found: int

    @property
    def recall(self) -> float:
        return self.found / self.expected if self.expected else 1.0


@dataclasses.dataclass(frozen=True)
class _Plan:
    cells: int  # 1: every pair is compared
    probes: int  # cells each row is assigned to
    centroids: np.ndarray | None  # (cells, dim) float32, unit rows; None for one cell
    blocks: np.ndarray  # per cell, how many blocks its rows are hashed into
    dim: int


# ---------------------------------------------------------------- checks


def _check_threshold(threshold: object) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ConfigError(
            f"{opt('threshold', threshold)} is not a number: pass a cosine in (0, 1], e.g. 0.95"
        )
    if not 0 < threshold <= 1:
        raise ConfigError(
            f"{opt('threshold', threshold)} is outside (0, 1]: pass a cosine similarity, "
            f"e.g. 0.95 for near-duplicates"
        )
    return float(threshold)


def _check_count(name: str, value: object, least: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{opt(name, value)}: {name} must be an integer >= {least} ({what})")
    return value


def _vector_column(table: DataFrame, features: str, what: str) -> Column:
    """`features` as array<float>, from an array of numbers or an MLlib vector."""
    data_type: DataType = table.schema[features].dataType
    if type(data_type).__name__ == "VectorUDT":
        from pyspark.ml.functions import vector_to_array

        column: Column = vector_to_array(F.col(features), "float32")
        return column
    if isinstance(data_type, ArrayType) and isinstance(data_type.elementType, NumericType):
        return F.col(features)
    raise ConfigError(
        f"{what}'s column {features!r} has Spark type {data_type.simpleString()}: pass "
        f"{opt('features')}= naming a column of vectors (array<float>, as featurex extract "
        f"writes, or an MLlib vector)"
    )


def _check_columns(table: DataFrame, what: str, **columns: object) -> None:
    if not isinstance(table, DataFrame) and type(table).__name__ != "DataFrame":
        raise ConfigError(f"{what} must be a Spark DataFrame, got {type(table).__name__}")
    have = table.columns
    for option, name in columns.items():
        if not isinstance(name, str):
            raise ConfigError(f"{opt(option, name)} must be a column name (a string)")
        if name not in have:
            raise ConfigError(
                f"{what} has no column {name!r} (its columns: {', '.join(have)}): pass "
                f"{opt(option)}= naming one of them"
            )


def _prepared(
    table: DataFrame, features: str, id: str, what: str, rank: Column | None = None
) -> DataFrame:
    """id, v (array), h (a hash of the id: blocks), ok (a usable vector), and r (the
    representative's rank) if given."""
    _check_columns(table, what, features=features, id=id)
    vector = _vector_column(table, features, what)
    extra = [] if rank is None else [rank.alias("r")]
    base = table.select(F.col(id).alias("id"), vector.alias("v"), *extra)
    square = F.aggregate(
        "v", F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") * x.cast("double")
    )
    # Spark orders NaN above every number, so the NaN test is explicit.
    usable = (~F.isnan(square)) & (square > 0) & (square < F.lit(math.inf))
    ok = F.col("v").isNotNull() & F.coalesce(usable, F.lit(False))
    return base.select(
        "id", "v", F.hash("id").alias("h"), ok.alias("ok"), *(["r"] if extra else [])
    )


def _stats(base: DataFrame, features: str, id: str, what: str) -> VectorStats:
    """One aggregate job: counts, vector lengths, unique ids. Raises ConfigError."""
    row = base.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count("id").alias("ids"),
        F.countDistinct("id").alias("distinct"),
        F.sum(F.when(F.col("v").isNull(), 1).otherwise(0)).alias("missing"),
        F.sum(F.when(F.col("v").isNotNull() & ~F.col("ok"), 1).otherwise(0)).alias("unusable"),
        F.min(F.when(F.col("ok"), F.size("v"))).alias("lo"),
        F.max(F.when(F.col("ok"), F.size("v"))).alias("hi"),
    ).first()
    assert row is not None
    rows, ids = int(row["rows"]), int(row["ids"])
    if ids < rows:
        raise ConfigError(
            f"{rows - ids} rows of {what} have a null {id!r}: every row needs an id; drop "
            f"them first, e.g. {what}.where(F.col({id!r}).isNotNull())"
        )
    if int(row["distinct"]) < ids:
        dup = base.groupBy("id").count().where("count > 1").select("id").first()
        assert dup is not None
        raise ConfigError(
            f"duplicate id {dup[0]!r} in column {id!r} of {what} "
            f"({plural(ids - int(row['distinct']), 'row repeats', 'rows repeat')} an id): ids "
            f"must be unique; pass {opt('id')}= naming a unique "
            f"column, or deduplicate first, e.g. {what}.dropDuplicates([{id!r}])"
        )
    lo, hi = row["lo"], row["hi"]
    if lo is not None and lo != hi:
        raise ConfigError(
            f"vectors in column {features!r} of {what} have different lengths ({lo} and {hi}): "
            f"compare vectors of one model; keep one length first, e.g. "
            f"{what}.where(F.size({features!r}) == {hi})"
        )
    stats = VectorStats(rows, int(row["missing"] or 0), int(row["unusable"] or 0), int(hi or 0))
    if stats.missing:
        _LOG.info("%d rows of %s have no vector: skipped, group_id null", stats.missing, what)
    if stats.unusable:
        _LOG.warning(
            "%d rows of %s have a vector with NaN, infinite or null values, or all zeros: "
            "not compared (group_id null)",
            stats.unusable,
            what,
        )
    return stats


def vector_stats(table: DataFrame, features: str = "features", id: str = "path") -> VectorStats:
    """Count the table's rows, its rows without a vector and those with an unusable one
    (NaN, infinite, all zeros), and check it as `similar_pairs` does (one Spark job)."""
    base = _prepared(table, features, id, "table")
    return _stats(base, features, id, "table")


# ---------------------------------------------------------------- numpy: the arithmetic


def _unit(vectors: Any, dim: int) -> np.ndarray:
    """A column of arrays as unit rows, float32 (n, dim)."""
    if len(vectors) == 0:
        return np.zeros((0, dim), np.float32)
    x = np.stack(list(vectors)).astype(np.float32, copy=False)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / norms, dtype=np.float32)


def _nearest(x: np.ndarray, centroids: np.ndarray, m: int) -> np.ndarray:
    """Each row's m most similar centroids, most similar first: (n, m) int32."""
    out = np.empty((len(x), m), np.int32)
    for s in range(0, len(x), _SUB_ROWS):
        scores = x[s : s + _SUB_ROWS] @ centroids.T
        if m < centroids.shape[0]:
            top = np.argpartition(-scores, m - 1, axis=1)[:, :m]
        else:
            top = np.tile(np.arange(m), (len(scores), 1))
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[s : s + len(scores)] = np.take_along_axis(top, order, axis=1)
    return out


def _kmeans(x: np.ndarray, cells: int, seed: int) -> np.ndarray:
    """Spherical k-means: unit centroids (cells, dim). An emptied cell keeps its centroid."""
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(len(x), cells, replace=False)].copy()
    for _ in range(_KMEANS_ROUNDS):
        cell = _nearest(x, centroids, 1)[:, 0]
        order = np.argsort(cell, kind="stable")
        present, starts = np.unique(cell[order], return_index=True)
        sums = np.add.reduceat(x[order], starts, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids[present] = sums / np.maximum(norms, 1e-12)
    return np.asarray(centroids, np.float32)


def _lowest_shared(cells_a: np.ndarray, cells_b: np.ndarray) -> np.ndarray:
    """The lowest cell two rows share, per pair: (p, m) x (p, m) -> (p,)."""
    big = np.iinfo(np.int32).max
    lowest = np.full(len(cells_a), big, np.int64)
    for j in range(cells_b.shape[1]):
        same = cells_a == cells_b[:, j : j + 1]
        lowest = np.minimum(lowest, np.where(same, cells_a, big).min(axis=1))
    return lowest


# ---------------------------------------------------------------- the plan


def _plan(
    base: DataFrame,
    stats: VectorStats,
    threshold: float,
    cells: int | None,
    probes: int | None,
    block_rows: int,
    exact_rows: int | None,
    sample_rows: int | None,
    seed: int,
) -> _Plan:
    n, dim = stats.usable, max(stats.dim, 1)
    if exact_rows is None:  # about 5e10 multiply-adds: seconds on one core
        exact_rows = int(math.sqrt(1e11 / dim))
    if cells == 1 or (cells is None and n <= exact_rows):
        blocks = np.array([max(1, math.ceil(n / block_rows))], np.int64)
        return _Plan(1, 1, None, blocks, dim)
    want = cells if cells is not None else min(_MAX_CELLS, max(2, round(math.sqrt(n))))
    if probes is None:  # a lower threshold reaches farther across a cell's border
        probes = 2 if threshold >= 0.9 else 3
    size = sample_rows or min(max(16 * want, 8192), 65536)
    size = min(size, max(want, _SAMPLE_BYTES // (4 * dim)), n)
    sample = _sample(base, size, n, dim, seed)
    want = min(want, len(sample))
    probes = min(probes, want)
    centroids = _kmeans(sample, want, seed)
    # Cell sizes estimated from the sample (no job over the table); a quarter to spare.
    counts = np.bincount(_nearest(sample, centroids, probes).ravel(), minlength=want)
    estimate = counts * (n / max(len(sample), 1)) * 1.25
    blocks = np.maximum(1, np.ceil(estimate / block_rows)).astype(np.int64)
    _LOG.info(
        "%d rows in %d cells (%d each), at most %d blocks in a cell", n, want, probes, blocks.max()
    )
    return _Plan(want, probes, centroids, blocks, dim)


_PACKED = StructType([StructField("x", BinaryType())])


def _sample(base: DataFrame, size: int, n: int, dim: int, seed: int) -> np.ndarray:
    """About `size` usable rows as unit vectors on the driver, packed per Arrow batch."""

    def pack(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        for batch in batches:
            yield pd.DataFrame({"x": [_unit(batch["v"], dim).tobytes()]})

    fraction = min(1.0, 1.2 * size / max(n, 1))
    rows = base.where("ok").select("v").sample(fraction=fraction, seed=seed)
    parts = [np.frombuffer(r["x"], np.float32) for r in rows.mapInPandas(pack, _PACKED).collect()]
    x = np.concatenate(parts).reshape(-1, dim) if parts else np.zeros((0, dim), np.float32)
    return x[:size]


# ---------------------------------------------------------------- cells and blocks


def _cell_schema(id_type: DataType) -> StructType:
    return StructType(
        [
            StructField("cell", IntegerType()),
            StructField("bi", IntegerType()),
            StructField("bj", IntegerType()),
            StructField("blk", IntegerType()),
            StructField("side", IntegerType()),
            StructField("id", id_type),
            StructField("cells", BinaryType()),
            StructField("x", BinaryType()),
        ]
    )


def _assign(
    plan: _Plan, probes: int, own: np.ndarray, other: np.ndarray, side: int
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Rows to their tasks. A row of block b in a cell with `other[cell]` blocks on the other
    side goes to task (cell, min(b, x), max(b, x)) for pairs (side 0 against itself), to
    (cell, b, x) for a query (side 1) and (cell, x, b) for a table row (side 2)."""
    centroids, dim = plan.centroids, plan.dim

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        for batch in batches:
            x = _unit(batch["v"], dim)
            n = len(x)
            if centroids is None:
                cells = np.zeros((n, 1), np.int32)
            else:
                cells = _nearest(x, centroids, probes)
            m = cells.shape[1]
            flat = cells.ravel()
            row = np.repeat(np.arange(n), m)
            block = batch["h"].to_numpy().astype(np.int64)[row] % own[flat]
            copies = other[flat]
            which = np.repeat(np.arange(n * m), copies)
            x_index = np.arange(copies.sum()) - np.repeat(np.cumsum(copies) - copies, copies)
            b = block[which]
            if side == 0:
                first, second = np.minimum(b, x_index), np.maximum(b, x_index)
            elif side == 1:
                first, second = b, x_index
            else:
                first, second = x_index, b
            rows = row[which]
            vectors = np.array([v.tobytes() for v in x] + [b""], dtype=object)[:-1]
            cell_bytes = np.array([c.tobytes() for c in cells] + [b""], dtype=object)[:-1]
            yield pd.DataFrame(
                {
                    "cell": flat[which].astype(np.int32),
                    "bi": first.astype(np.int32),
                    "bj": second.astype(np.int32),
                    "blk": b.astype(np.int32),
                    "side": np.full(len(rows), side, np.int32),
                    "id": batch["id"].to_numpy()[rows],
                    "cells": cell_bytes[rows],
                    "x": vectors[rows],
                }
            )

    return run


def _tasks(
    base: DataFrame, plan: _Plan, probes: int, own: np.ndarray, other: np.ndarray, side: int
) -> DataFrame:
    id_type = base.schema["id"].dataType
    fn = _assign(plan, probes, own, other, side)
    return base.where("ok").select("id", "v", "h").mapInPandas(fn, _cell_schema(id_type))


def _matrix(column: Any, dim: int) -> np.ndarray:
    return np.frombuffer(b"".join(column), np.float32).reshape(-1, dim)


def _cells(column: Any) -> np.ndarray:
    joined = b"".join(column)
    return np.frombuffer(joined, np.int32).reshape(len(column), -1)


def _pairs_task(threshold: float, dim: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    floor = np.float32(threshold - _TOLERANCE)

    def run(group: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        cell, bi, bj = (int(group[c].to_numpy()[0]) for c in ("cell", "bi", "bj"))
        x, cells, ids = _matrix(group["x"], dim), _cells(group["cells"]), group["id"].to_numpy()
        blk = group["blk"].to_numpy()
        left = np.flatnonzero(blk == bi)
        right = left if bi == bj else np.flatnonzero(blk == bj)
        found_a, found_b, found_c = [], [], []
        for s in range(0, len(left), _SUB_ROWS):
            rows = left[s : s + _SUB_ROWS]
            cols = left[s:] if bi == bj else right
            scores = x[rows] @ x[cols].T
            r, c = np.nonzero(scores >= floor)
            if bi == bj:  # each pair once: the upper triangle
                keep = c > r
                r, c = r[keep], c[keep]
            found_a.append(rows[r])
            found_b.append(cols[c])
            found_c.append(scores[r, c])
        i = np.concatenate(found_a) if found_a else np.zeros(0, np.int64)
        j = np.concatenate(found_b) if found_b else np.zeros(0, np.int64)
        cosine = np.concatenate(found_c) if found_c else np.zeros(0, np.float32)
        if cells.shape[1] > 1 and len(i):  # rows sharing cells: only the lowest emits
            keep = _lowest_shared(cells[i], cells[j]) == cell
            i, j, cosine = i[keep], j[keep], cosine[keep]
        a, b = ids[i], ids[j]
        swap = np.asarray(a > b, dtype=bool)
        a, b = np.where(swap, b, a), np.where(swap, a, b)
        cosine = np.minimum(cosine, 1).astype(np.float32)
        frame: pd.DataFrame = pd.DataFrame({"a": a, "b": b, "cosine": cosine})
        return frame

    return run


def _pair_schema(id_type: DataType) -> StructType:
    return StructType(
        [StructField("a", id_type), StructField("b", id_type), StructField("cosine", FloatType())]
    )


def _pairs(base: DataFrame, plan: _Plan, threshold: float) -> DataFrame:
    id_type = base.schema["id"].dataType
    tasks = _tasks(base, plan, plan.probes, plan.blocks, plan.blocks, 0)
    return tasks.groupBy("cell", "bi", "bj").applyInPandas(
        _pairs_task(threshold, plan.dim), _pair_schema(id_type)
    )


@dataclasses.dataclass(frozen=True)
class _Options:
    cells: int | None
    probes: int | None
    block_rows: int
    exact_rows: int | None
    sample_rows: int | None
    seed: int

    def check(self) -> _Options:
        for name in ("cells", "probes", "exact_rows", "sample_rows"):
            value = getattr(self, name)
            if value is not None:
                _check_count(name, value, 1, "or None to choose from the table's size")
        _check_count("block_rows", self.block_rows, 2, "rows of one block in a task")
        return self


def _similar(
    table: DataFrame,
    threshold: float,
    features: str,
    id: str,
    options: _Options,
    rank: Column | None = None,
) -> tuple[DataFrame, DataFrame, VectorStats]:
    """The prepared table, its pairs (lazy) and its stats."""
    threshold = _check_threshold(threshold)
    options.check()
    base = _prepared(table, features, id, "table", rank)
    stats = _stats(base, features, id, "table")
    plan = _plan(
        base, stats, threshold, options.cells, options.probes, options.block_rows,
        options.exact_rows, options.sample_rows, options.seed,
    )  # fmt: skip
    return base, _pairs(base, plan, threshold), stats


def similar_pairs(
    table: DataFrame,
    threshold: float = 0.95,
    features: str = "features",
    id: str = "path",
    *,
    cells: int | None = None,
    probes: int | None = None,
    block_rows: int = 4096,
    exact_rows: int | None = None,
    sample_rows: int | None = None,
    seed: int = 0,
) -> DataFrame:
    """Every pair of rows whose vectors' cosine is at or above `threshold`, once.

    Returns a DataFrame with columns a, b (ids, a < b) and cosine (float). Each cosine is
    computed exactly; a pair is missed only if its rows share no cell (`pair_recall`
    measures how many). Checks the table first (one job): a missing column, a threshold
    outside (0, 1], duplicate or null ids, or vectors of different lengths raise ConfigError.
    Rows with a null or unusable vector (NaN, infinite, zeros) are skipped.

    cells: k-means cells (default about sqrt(N), at most 4096; 1 compares every pair);
    probes: cells per row (default 2, 3 below threshold 0.9); block_rows: the most rows of
    one block (a task holds two); exact_rows: up to this many usable rows, every pair is
    compared (default from the vector length, about 14,000 for 512); sample_rows: the
    k-means sample the driver holds; seed: the sample's and k-means' seed.
    """
    options = _Options(cells, probes, block_rows, exact_rows, sample_rows, seed)
    _, pairs, _ = _similar(table, threshold, features, id, options)
    return pairs


# ---------------------------------------------------------------- connected components


def _checkpoint(frame: DataFrame) -> DataFrame:
    """Materialize `frame` and cut its lineage, so that rounds do not grow the plan.

    localCheckpoint where the client has it (classic, Connect 4.x); a cache otherwise."""
    try:
        return frame.localCheckpoint()
    except (AttributeError, NotImplementedError):
        cached = frame.cache()
        cached.count()
        return cached


def _large_star(edges: DataFrame) -> DataFrame:
    """Each node's larger neighbours to the smallest of its neighbourhood and itself."""
    both = edges.select(F.col("x").alias("u"), F.col("y").alias("v")).union(
        edges.select(F.col("y").alias("u"), F.col("x").alias("v"))
    )
    least = both.groupBy("u").agg(F.min("v").alias("m"))
    return (
        both.join(least, "u")
        .where(F.col("v") > F.col("u"))
        .select(F.col("v").alias("x"), F.least("m", "u").alias("y"))
        .distinct()
    )


def _small_star(edges: DataFrame) -> DataFrame:
    """Each node and its smaller neighbours to the smallest of them (edges are x > y)."""
    least = edges.groupBy("x").agg(F.min("y").alias("m"))
    moved = (
        edges.join(least, "x")
        .where(F.col("y") != F.col("m"))
        .select(F.col("y").alias("x"), F.col("m").alias("y"))
    )
    return moved.union(least.select("x", F.col("m").alias("y"))).distinct()


def _is_star_forest(edges: DataFrame) -> bool:
    """Whether every node points at one root, which points at nothing: then each edge is
    (node, the smallest id of its component)."""
    two_roots = edges.groupBy("x").count().where("count > 1").select("x")
    root_not_root = edges.join(edges.select(F.col("x").alias("y")), "y", "leftsemi").select("x")
    return two_roots.union(root_not_root).limit(1).count() == 0


def _components(edges: DataFrame) -> DataFrame:
    """Large-star / small-star (Kiveris et al. 2014) on edges (x, y), x > y: returns
    (x, y) with y the smallest id of x's component, for every x that is not that id."""
    for _ in range(_MAX_ROUNDS):
        edges = _checkpoint(_small_star(_large_star(edges)))
        if _is_star_forest(edges):
            return edges
    raise RuntimeError(f"connected components did not converge in {_MAX_ROUNDS} rounds")


def _groups(base: DataFrame, pairs: DataFrame, id: str, representative: Column | None) -> DataFrame:
    edges = _checkpoint(pairs.select(F.col("b").alias("x"), F.col("a").alias("y")))
    roots = _components(edges).select(F.col("x").alias("id"), F.col("y").alias("root"))
    rows = base.select("id", "ok", *(["r"] if representative is not None else []))
    labelled = rows.join(roots, "id", "left").withColumn(
        "root", F.when(F.col("ok"), F.coalesce("root", "id"))
    )
    if representative is None:
        group = F.col("root")
    else:  # the row ranked first: the largest value, nulls last, ties by the smallest id
        ranked = Window.partitionBy("root").orderBy(F.col("r").desc_nulls_last(), F.col("id"))
        whole = ranked.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
        group = F.when(F.col("ok"), F.first("id").over(whole))
    return labelled.select(
        F.col("id").alias(id),
        group.alias("group_id"),
        F.coalesce(group == F.col("id"), F.lit(False)).alias("is_representative"),
    )


def near_duplicates(
    table: DataFrame,
    threshold: float = 0.95,
    features: str = "features",
    id: str = "path",
    *,
    representative: str | Column | None = None,
    cells: int | None = None,
    probes: int | None = None,
    block_rows: int = 4096,
    exact_rows: int | None = None,
    sample_rows: int | None = None,
    seed: int = 0,
) -> DataFrame:
    """Groups of near-duplicates: the connected components of `similar_pairs`.

    Returns a DataFrame with one row per row of `table`: <id>, group_id (the id of the
    group's representative) and is_representative. A~B and B~C make one group even where A
    and C are not similar. A row in no pair is a group of one, its own representative. A row
    without a usable vector (null, NaN, infinite, zeros) has group_id null and
    is_representative false, so ``.where("is_representative")`` keeps one row per group and
    drops the failed images.

    representative: a column (name or Column) of `table`; the row with its largest value
    represents the group (nulls last, ties by the smallest id). Default: the smallest id.
    The other options are `similar_pairs`'.

    The pairs are computed once and checkpointed (localCheckpoint); the components take a few
    rounds of joins, each checkpointed, with one count per round on the driver.
    """
    options = _Options(cells, probes, block_rows, exact_rows, sample_rows, seed)
    groups, _, _ = _near_duplicates(table, threshold, features, id, representative, options)
    return groups


def _near_duplicates(
    table: DataFrame,
    threshold: float,
    features: str,
    id: str,
    representative: str | Column | None,
    options: _Options,
) -> tuple[DataFrame, DataFrame, VectorStats]:
    """Groups, the checkpointed pairs and the stats."""
    rank: Column | None = None
    if representative is not None:
        if isinstance(representative, str):
            _check_columns(table, "table", representative=representative)
            rank = F.col(representative)
        elif is_column(representative):
            rank = representative
        else:
            raise ConfigError(
                f"{opt('representative', representative)} must be a column name or a Column "
                f"(the row with its largest value represents its group)"
            )
    base, pairs, stats = _similar(table, threshold, features, id, options, rank)
    pairs = _checkpoint(pairs)
    return _groups(base, pairs, id, rank), pairs, stats


# ---------------------------------------------------------------- recall


def _search_task(
    queries: np.ndarray, query_ids: list[Any], threshold: float, dim: int
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Every pair of a sampled row and a table row at or above the threshold, oriented a < b."""
    floor = np.float32(threshold - _TOLERANCE)
    sample_ids = np.array([*query_ids, None], dtype=object)[:-1]

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        for batch in batches:
            x, ids = _unit(batch["v"], dim), batch["id"].to_numpy()
            r, c = np.nonzero(queries @ x.T >= floor)
            a, b = sample_ids[r], ids[c]
            keep = np.asarray(a != b, dtype=bool)
            a, b = a[keep], b[keep]
            swap = np.asarray(a > b, dtype=bool)
            yield pd.DataFrame({"a": np.where(swap, b, a), "b": np.where(swap, a, b)})

    return run


def _sample_rows(
    base: DataFrame, size: int, usable: int, dim: int, seed: int
) -> tuple[list[Any], np.ndarray]:
    """About `size` usable rows, their ids and unit vectors, on the driver."""
    fraction = min(1.0, 1.5 * size / max(usable, 1))
    rows = base.where("ok").sample(fraction=fraction, seed=seed).limit(size).select("id", "v")
    collected = rows.collect()
    vectors = _unit([np.asarray(r["v"], np.float32) for r in collected], dim)
    return [r["id"] for r in collected], vectors


def pair_recall(
    table: DataFrame,
    pairs: DataFrame,
    threshold: float = 0.95,
    features: str = "features",
    id: str = "path",
    *,
    sample: int = 1000,
    seed: int = 0,
) -> Recall:
    """Measure the recall of `pairs` (as `similar_pairs` returns them) against exact search.

    About `sample` rows with a usable vector are drawn from `table` and each is compared with
    every row of the table (their vectors travel in the task's closure: sample x dim floats);
    the pairs at or above `threshold` that involve them are the truth, and `found` counts
    those present in `pairs`. Two Spark jobs over the table, and one over `pairs` (cache or
    checkpoint it first if it is costly to compute). Precision needs no sample: every pair
    `similar_pairs` returns had its cosine computed exactly.
    """
    threshold = _check_threshold(threshold)
    _check_count("sample", sample, 1, "rows searched exactly")
    _check_columns(pairs, "pairs", a="a", b="b")
    base = _prepared(table, features, id, "table")
    stats = _stats(base, features, id, "table")
    return _recall(base, stats, pairs, threshold, sample, seed)


def _recall(
    base: DataFrame, stats: VectorStats, pairs: DataFrame, threshold: float, sample: int, seed: int
) -> Recall:
    ids, vectors = _sample_rows(base, sample, stats.usable, stats.dim, seed)
    if not ids:
        return Recall(0, 0, 0)
    id_type = base.schema["id"].dataType
    schema = StructType([StructField("a", id_type), StructField("b", id_type)])
    search = _search_task(vectors, ids, threshold, stats.dim)
    truth = base.where("ok").select("id", "v").mapInPandas(search, schema).distinct()
    hits = pairs.select("a", "b", F.lit(1).alias("hit"))
    row = (
        truth.join(hits, ["a", "b"], "left")
        .agg(F.count(F.lit(1)).alias("expected"), F.count("hit").alias("found"))
        .first()
    )
    assert row is not None
    return Recall(len(ids), int(row["expected"]), int(row["found"]))


# ---------------------------------------------------------------- nearest neighbours


def _neighbors_task(k: int, dim: int, exclude_self: bool) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def run(group: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        cell = int(group["cell"].to_numpy()[0])
        side = group["side"].to_numpy()
        q, t = group[side == 1], group[side == 2]
        out: list[pd.DataFrame] = []
        if len(q) and len(t):
            qx, tx = _matrix(q["x"], dim), _matrix(t["x"], dim)
            qc, tc = _cells(q["cells"]), _cells(t["cells"])
            qid, tid = q["id"].to_numpy(), t["id"].to_numpy()
            take = min(k + int(exclude_self), len(t))
            for s in range(0, len(q), _SUB_ROWS):
                scores = qx[s : s + _SUB_ROWS] @ tx.T
                # A (query, row) pair that shares a lower cell is that cell's to score.
                for i in range(qc.shape[1]):
                    lower = qc[s : s + _SUB_ROWS, i : i + 1]
                    for j in range(tc.shape[1]):
                        shared = (lower == tc[None, :, j]) & (lower < cell)
                        scores[shared] = -np.inf
                top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
                r = np.repeat(np.arange(len(top)), take)
                c = top.ravel()
                cosine = scores[r, c]
                keep = np.isfinite(cosine)
                if exclude_self:
                    keep &= np.asarray(qid[s + r] != tid[c], dtype=bool)
                out.append(
                    pd.DataFrame(
                        {
                            "query": qid[s + r][keep],
                            "neighbor": tid[c][keep],
                            "cosine": np.minimum(cosine[keep], 1).astype(np.float32),
                        }
                    )
                )
        empty = pd.DataFrame({"query": [], "neighbor": [], "cosine": []})
        frame: pd.DataFrame = pd.concat(out, ignore_index=True) if out else empty
        return frame

    return run


def nearest_neighbors(
    queries: DataFrame,
    table: DataFrame,
    k: int = 10,
    features: str = "features",
    id: str = "path",
    *,
    exclude_self: bool = True,
    exact: bool | None = None,
    cells: int | None = None,
    probes: int | None = None,
    query_probes: int | None = None,
    block_rows: int = 4096,
    exact_rows: int | None = None,
    sample_rows: int | None = None,
    seed: int = 0,
) -> DataFrame:
    """The k rows of `table` most similar (by cosine) to each row of `queries`.

    Returns a DataFrame: query, neighbor (ids), cosine (float), rank (1..k, cosine
    descending, ties by the smaller neighbor id). Both tables have the columns `features` and
    `id`. A query without a usable vector has no row. exclude_self: a neighbor with the
    query's own id is skipped (queries drawn from the table do not find themselves).

    Exact when the table has at most `exact_rows` usable rows, or with exact=True: every
    query is compared with every row. Beyond, the same cells as `similar_pairs`: table rows
    in their `probes` nearest cells, each query searched in its `query_probes` nearest
    (default 2 x probes); compare with exact=True on a sample of queries to measure recall.
    """
    k = _check_count("k", k, 1, "the number of neighbours per query")
    options = _Options(cells, probes, block_rows, exact_rows, sample_rows, seed).check()
    if query_probes is not None:
        _check_count("query_probes", query_probes, 1, "cells each query searches")
    base = _prepared(table, features, id, "table")
    asked = _prepared(queries, features, id, "queries")
    stats = _stats(base, features, id, "table")
    query_stats = _stats(asked, features, id, "queries")
    if query_stats.dim and stats.dim and query_stats.dim != stats.dim:
        raise ConfigError(
            f"the queries' vectors have length {query_stats.dim}, the table's {stats.dim}: "
            f"compare vectors of one model"
        )
    plan = _plan(
        base, stats, 0.95, 1 if exact else options.cells, options.probes, options.block_rows,
        stats.usable if exact else options.exact_rows, options.sample_rows, options.seed,
    )  # fmt: skip
    if plan.centroids is None:
        query_share = np.ones(1)
        query_probes = 1
    else:
        query_probes = min(query_probes or 2 * plan.probes, plan.cells)
        # Queries are taken to follow the table's distribution: the sample's share per cell.
        table_blocks = plan.blocks.astype(np.float64)
        query_share = table_blocks / table_blocks.sum() * query_probes
    query_blocks = np.maximum(
        1, np.ceil(query_share * query_stats.usable * 1.25 / options.block_rows)
    ).astype(np.int64)
    tasks = _tasks(asked, plan, query_probes, query_blocks, plan.blocks, 1).union(
        _tasks(base, plan, plan.probes, plan.blocks, query_blocks, 2)
    )
    id_type = base.schema["id"].dataType
    schema = StructType(
        [
            StructField("query", queries.schema[id].dataType),
            StructField("neighbor", id_type),
            StructField("cosine", FloatType()),
        ]
    )
    if schema["query"].dataType != id_type:
        raise ConfigError(
            f"the queries' {id!r} has Spark type {schema['query'].dataType.simpleString()}, "
            f"the table's {id_type.simpleString()}: cast one of them"
        )
    found = tasks.groupBy("cell", "bi", "bj").applyInPandas(
        _neighbors_task(k, plan.dim, exclude_self), schema
    )
    order = Window.partitionBy("query").orderBy(F.col("cosine").desc(), F.col("neighbor"))
    ranked = found.withColumn("rank", F.row_number().over(order))
    return ranked.where(F.col("rank") <= k).select(
        "query", "neighbor", "cosine", F.col("rank").cast(IntegerType()).alias("rank")
    )
