"""Chunked, resumable `featurex extract` runs: list the inputs once, keep what OUT already
holds, featurize the rest in chunks, and commit each chunk as one Parquet file.

OUT's layout:

    OUT/chunk-000001.parquet                 a committed chunk: path, features, error
    OUT/_featurex/manifest.json              the fingerprint of what made the rows
    OUT/_featurex/chunks/chunk-000001.json   that file's inputs: path, size, modification time
    OUT/_featurex/pending/                   Spark's output for the chunk in flight

Spark and pyarrow skip names that start with "_" or ".", so readers see committed chunks
only. Spark writes a chunk into pending/ as one file (a shuffle to one partition after
featurization), then the driver commits it:

- a new chunk: its record is written, then its file is renamed to OUT/chunk-N.parquet. The
  rename is the commit point; a record whose file is missing is void and is removed by the
  next `--resume`, so a crash between the two steps loses that chunk and nothing else.
- a file that changed since its row was written (size or modification time): its chunk file
  is rewritten with the new rows and the other rows it held, renamed over the old file (one
  atomic replace: a reader sees the old rows or the new ones, one row per path either way),
  and then its record is updated. A crash between those two leaves the old identities in the
  record, so the next run featurizes those files again: work repeated, never a wrong row.

A rename is atomic on local filesystems and HDFS; object stores (s3a, gs) have no atomic
rename, so there a crash can leave a chunk half-visible.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from ._inputs import Found, Images, Source, spark_hides
from ._inputs import identities as _identities
from ._listing import image_extensions, local_path
from .config import ExtractorConfig, _calibration_version, _fingerprint
from .errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "Found", "Images", "Plan", "Run", "Source", "Store", "Totals", "check_output",
    "check_overlap", "feature_rows", "fingerprint", "image_extensions", "local_path",
    "open_store", "plan", "recover",
]  # fmt: skip

log = logging.getLogger(__name__)

META = "_featurex"
MANIFEST = f"{META}/manifest.json"
RECORDS = f"{META}/chunks"
PENDING = f"{META}/pending"
FORMAT = 1
_CHUNK_RE = re.compile(r"^chunk-(\d+)\.parquet$")
# What featurex writes into OUT: its folder, the chunks, and Hadoop's checksums of them.
_OURS = re.compile(rf"^({META}|\.?chunk-\d+\.parquet(\.crc)?)$")


# ---------------------------------------------------------------- fingerprint


def fingerprint(config: ExtractorConfig, input_type: str, output_type: str) -> dict[str, str]:
    """What made the rows in OUT; `--resume` refuses a run whose fingerprint differs.

    Everything that changes a feature vector or the table's schema, and nothing that does
    not (batch size, device, threads). A new option that changes features, say `normalize`,
    is one more entry here; an OUT made before it lacks the entry and is refused, as after
    any upgrade (the featurex version is one of the entries).
    """
    from . import __version__

    source = config.source
    model = config.model if isinstance(config.model, str) else _fingerprint(config.model)
    if config.weights is None:
        weights = f"none (random init, seed {config.seed})"
    elif source.family == "torchvision" and config.checkpoint is None:
        from .models.torchvision import resolve_weights

        weights = str(resolve_weights(str(source.model), config.weights))  # DEFAULT -> its name
    elif source.family == "timm" and config.weights == "DEFAULT":
        weights = f"DEFAULT ({source.model})"  # the tag timm's DEFAULT was pinned to
    else:
        # A checkpoint's path, size and mtime; a Hugging Face commit or folder fingerprint;
        # an open_clip tag; a factory's own.
        weights = source.identity
    made = {
        "featurex": __version__,
        "model": model,
        "weights": weights,
        "precision": config.precision,
        "transform": _preprocessing(config),
        "fast_decode": str(config.fast_decode),
        "normalize": str(config.normalize),
        "input_type": input_type,
        "output_type": output_type,
    }
    if config.precision == "int8":  # calibrated on other images, another model
        made["calibration"] = _calibration_version(config.calibration)
    return made


def _preprocessing(config: ExtractorConfig) -> str:
    """The preprocessing that makes the rows, as the fingerprint records it: `transform=`'s
    fingerprint; torchvision's preset for named weights, or the default one (Resize(256),
    CenterCrop(224), ImageNet Normalize) for a checkpoint, random init or a factory; for the
    other families, their own for the model, which the model and weights entries pin."""
    from .models.base import default_transform

    source = config.source
    if config.transform is not None:
        return f"transform {_fingerprint(config.transform)}"
    if source.family not in ("torchvision", "factory"):
        return f"{source.family}'s own for the model"
    if source.family == "torchvision" and source.weights is not None and not config.checkpoint:
        from .models.torchvision import resolve_weights

        preset = resolve_weights(str(source.model), source.weights).transforms()
    else:
        preset = default_transform()
    return " ".join(repr(preset).split())  # one line: a refused --resume prints it


def differences(made: dict[str, str], wanted: dict[str, str]) -> list[str]:
    """The fields that differ, each as "field 'in OUT' (this run: 'wanted')"."""
    return [
        f"{key} {made.get(key, 'unset')!r} (this run: {wanted.get(key, 'unset')!r})"
        for key in sorted(made.keys() | wanted.keys())
        if made.get(key) != wanted.get(key)
    ]


# ---------------------------------------------------------------- where OUT lives


class Store(Protocol):
    """OUT, on some filesystem. Names are relative to OUT, with "/" separators."""

    def uri(self, name: str = "") -> str: ...
    def kind(self, name: str = "") -> str | None: ...  # "dir", "file" or None (missing)
    def list(self, name: str = "") -> list[str]: ...  # [] for a missing folder
    def read_text(self, name: str) -> str: ...
    def write_text(self, name: str, text: str) -> None: ...  # atomic, replaces
    def rename(self, src: str, dst: str) -> None: ...  # replaces dst, atomically where it can
    def delete(self, name: str) -> None: ...  # recursive; nothing if missing
    def mkdirs(self, name: str) -> None: ...
    def parquet_rows(self, name: str) -> int: ...  # from the file's footer


class LocalStore:
    """OUT on the driver's own filesystem (a path or a file: URI)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/")) if name else self.root

    def uri(self, name: str = "") -> str:
        return self._path(name)

    def kind(self, name: str = "") -> str | None:
        path = self._path(name)
        return "dir" if os.path.isdir(path) else "file" if os.path.exists(path) else None

    def list(self, name: str = "") -> list[str]:
        try:
            return os.listdir(self._path(name))
        except FileNotFoundError:
            return []

    def read_text(self, name: str) -> str:
        with open(self._path(name), encoding="utf-8") as f:
            return f.read()

    def write_text(self, name: str, text: str) -> None:
        path = self._path(name)
        folder, base = os.path.split(path)
        tmp = os.path.join(folder, f".{base}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)

    def rename(self, src: str, dst: str) -> None:
        os.replace(self._path(src), self._path(dst))  # rename(2): atomic, replaces a file

    def delete(self, name: str) -> None:
        import shutil

        path = self._path(name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)

    def mkdirs(self, name: str) -> None:
        os.makedirs(self._path(name), exist_ok=True)

    def parquet_rows(self, name: str) -> int:
        import pyarrow.parquet as pq

        return int(pq.read_metadata(self._path(name)).num_rows)


class HadoopStore:
    """OUT on any filesystem Spark writes to (hdfs:, s3a:, ...), through the JVM's Hadoop
    FileSystem with the session's configuration (its credentials). Needs a classic session:
    the CLI's own."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.root = root.rstrip("/")
        self._spark = spark
        jvm, jsc = spark._jvm, spark._jsc
        assert jvm is not None and jsc is not None, "a classic Spark session"
        self._new_array = spark.sparkContext._gateway.new_array  # type: ignore[union-attr]
        self._hadoop: Any = jvm.org.apache.hadoop.fs
        self._io: Any = jvm.org.apache.commons.io.IOUtils
        self._conf = jsc.hadoopConfiguration()
        self._fs = self._hadoop.Path(self.root).getFileSystem(self._conf)

    def uri(self, name: str = "") -> str:
        return f"{self.root}/{name}" if name else self.root

    def _p(self, name: str) -> Any:
        return self._hadoop.Path(self.uri(name))

    def kind(self, name: str = "") -> str | None:
        if not self._fs.exists(self._p(name)):
            return None
        return "dir" if self._fs.getFileStatus(self._p(name)).isDirectory() else "file"

    def list(self, name: str = "") -> list[str]:
        if not self._fs.exists(self._p(name)):
            return []
        return [str(s.getPath().getName()) for s in self._fs.listStatus(self._p(name))]

    def read_text(self, name: str) -> str:
        stream = self._fs.open(self._p(name))
        try:
            return str(self._io.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def write_text(self, name: str, text: str) -> None:
        folder, _, base = name.rpartition("/")
        tmp = f"{folder}/.{base}.tmp" if folder else f".{base}.tmp"
        stream = self._fs.create(self._p(tmp), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()
        self.rename(tmp, name)

    def rename(self, src: str, dst: str) -> None:
        if not self._fs.exists(self._p(dst)):
            if not self._fs.rename(self._p(src), self._p(dst)):
                raise OSError(f"could not rename {self.uri(src)} to {self.uri(dst)}")
            return
        # Replacing a file: FileContext's rename with OVERWRITE, one atomic step on HDFS.
        context = self._hadoop.FileContext.getFileContext(self._fs.getUri(), self._conf)
        overwrite = getattr(self._hadoop, "Options$Rename")
        options = self._new_array(overwrite, 1)
        options[0] = overwrite.OVERWRITE
        context.rename(self._p(src), self._p(dst), options)

    def delete(self, name: str) -> None:
        self._fs.delete(self._p(name), True)

    def mkdirs(self, name: str) -> None:
        self._fs.mkdirs(self._p(name))

    def parquet_rows(self, name: str) -> int:
        return int(self._spark.read.parquet(self.uri(name)).count())  # Spark reads the footer


# ---------------------------------------------------------------- OUT's state


def check_output(
    store: Store, wanted: dict[str, str], resume: bool, overwrite: bool, name: str | None = None
) -> None:
    """Refuse, before any job, an OUT this run must not write into (a ConfigError naming
    it as `name`, the user's spelling).

    featurex deletes only what it wrote: `--overwrite` replaces an OUT that holds featurex's
    output and nothing else. An empty folder, and an OUT whose run committed nothing (it
    failed, or was killed, before its first chunk), are as good as a new one.
    """
    kind = store.kind()
    where = name or store.uri()
    if kind is None:
        return
    if kind != "dir":
        raise ConfigError(
            f"output {where!r} is a file, which featurex does not replace: pass another "
            f"--output, or remove it yourself"
        )
    entries = store.list()
    if not entries:
        return
    manifest = _manifest(store)
    if manifest is None:
        flag = "--resume: " if resume else "--overwrite: " if overwrite else ""
        raise ConfigError(
            f"{flag}output {where!r} was not written by featurex extract (no {MANIFEST}), and "
            f"featurex replaces only its own output: pass another --output, or empty or "
            f"remove that folder yourself"
        )
    if not _committed(entries):
        return
    if overwrite:
        foreign = sorted(e for e in entries if not _OURS.match(e))
        if foreign:
            raise ConfigError(
                f"--overwrite: output {where!r} also holds files featurex did not write "
                f"({', '.join(map(repr, foreign[:3]))}{', ...' if len(foreign) > 3 else ''}), "
                f"and featurex deletes only its own output: move them, or pass another --output"
            )
        return
    if not resume:
        raise ConfigError(
            f"output {where!r} exists: pass --overwrite to replace it (or --resume to continue it)"
        )
    if manifest.get("format") != FORMAT:
        raise ConfigError(
            f"--resume: output {where!r} has layout {manifest.get('format')!r}, this featurex "
            f"writes {FORMAT}: pass --overwrite to start over, or another --output"
        )
    diff = differences(manifest["fingerprint"], wanted)
    if diff:
        raise ConfigError(
            f"--resume: output {where!r} holds features made differently: {'; '.join(diff)}. "
            f"Resume with the same settings, pass --overwrite to start over, or another --output"
        )


def _committed(entries: list[str]) -> bool:
    """Whether OUT's entries hold a committed chunk."""
    return any(_CHUNK_RE.match(e) for e in entries)


def check_overlap(inputs: list[str], output: str) -> None:
    """Refuse an OUT inside an INPUT folder (a later run would read its chunks as images)
    and an INPUT inside OUT (--overwrite would delete it)."""

    def where(path: str) -> str:
        local = local_path(path)
        return os.path.realpath(local) if local is not None else path.rstrip("/")

    def within(inner: str, outer: str) -> bool:
        return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)

    out = where(output)
    for path in inputs:
        folder = where(path)
        if within(out, folder):
            raise ConfigError(
                f"--output {output!r} is inside the input {path!r}, so a later run would read "
                f"its own files as images: pass an --output outside the inputs"
            )
        if within(folder, out):
            raise ConfigError(
                f"the input {path!r} is inside --output {output!r}, which featurex writes and "
                f"--overwrite replaces: pass an --output outside the inputs"
            )


def _manifest(store: Store) -> dict[str, Any] | None:
    if store.kind(MANIFEST) != "file":
        return None
    manifest: dict[str, Any] = json.loads(store.read_text(MANIFEST))
    return manifest


def _record_name(file: str) -> str:
    return f"{RECORDS}/{file.removesuffix('.parquet')}.json"


def _record(file: str, rows: pd.DataFrame) -> str:
    """A chunk file's inputs, as JSON: what a later run compares the listing with."""
    return json.dumps(
        {
            "file": file,
            "paths": rows["path"].tolist(),
            "sizes": [None if pd.isna(s) else int(s) for s in rows["size"]],
            "mtimes": [None if pd.isna(m) else int(m) for m in rows["mtime"]],
        }
    )


def _read_record(store: Store, name: str) -> pd.DataFrame:
    data = json.loads(store.read_text(name))
    record = _identities(data["paths"], data["sizes"], data["mtimes"])
    record["file"] = data["file"]
    return record


def recover(store: Store) -> pd.DataFrame:
    """Bring OUT back to its last commit; return what it holds: path, size, mtime, file.

    Spark's output for an interrupted chunk is deleted, and so is a record whose file was
    never renamed into place (a crash between the two steps of a commit).
    """
    store.delete(PENDING)
    files = {name for name in store.list() if _CHUNK_RE.match(name)}
    held = [_identities([], [], []).assign(file=pd.Series([], dtype=object))]
    for name in sorted(store.list(RECORDS)):
        file = f"{name.removesuffix('.json')}.parquet"
        if name.endswith(".tmp"):  # a record write cut short
            store.delete(f"{RECORDS}/{name}")
        elif name.startswith(".") or not name.endswith(".json"):  # Hadoop's .crc files
            continue
        elif file not in files:
            log.info("removing the record of %s: that chunk was never committed", file)
            store.delete(f"{RECORDS}/{name}")
        else:
            held.append(_read_record(store, f"{RECORDS}/{name}"))
            files.discard(file)
    if files:
        raise ConfigError(
            f"--resume: {store.uri(min(files))} has no record in {store.uri(RECORDS)}, so its "
            f"rows cannot be matched to inputs: remove it, or pass --overwrite to start over"
        )
    holds: pd.DataFrame = pd.concat(held, ignore_index=True)
    return holds


# ---------------------------------------------------------------- what to do


@dataclass(frozen=True)
class Plan:
    """The inputs of one run against what OUT holds."""

    total: int  # inputs listed
    skipped: int  # in OUT, unchanged
    new: pd.DataFrame  # path, load, size, mtime: not in OUT, sorted by path
    changed: pd.DataFrame  # the same plus file: in OUT, but the input changed since
    every: int

    def chunks(self) -> list[pd.DataFrame]:
        return [self.new.iloc[i : i + self.every] for i in range(0, len(self.new), self.every)]


def plan(listing: pd.DataFrame, held: pd.DataFrame, every: int) -> Plan:
    """Split the listing into what OUT holds, what changed since, and what is new."""
    merged = listing.merge(held, on="path", how="left", suffixes=("", "_held"))
    known = merged["file"].notna()
    same = (
        known
        & _same(merged["size"], merged["size_held"])
        & _same(merged["mtime"], merged["mtime_held"])
    )
    columns = ["path", "load", "size", "mtime"]
    return Plan(
        total=len(listing),
        skipped=int(same.sum()),
        new=merged.loc[~known, columns].reset_index(drop=True),
        changed=merged.loc[known & ~same, [*columns, "file"]].reset_index(drop=True),
        every=every,
    )


def _same(a: pd.Series, b: pd.Series) -> pd.Series:
    """Equal, with unknown equal to unknown (paths from a listing file have no size)."""
    both_unknown = a.isna() & b.isna()
    equal: pd.Series = (a == b).fillna(False).astype(bool) | both_unknown
    return equal


# ---------------------------------------------------------------- the run


@dataclass
class Totals:
    extracted: int = 0  # images featurized by this run
    failed: int = 0  # of those, how many gave a null and a reason
    chunks: int = 0  # files committed (new chunks and rewritten ones)

    def add(self, images: int, failed: int) -> None:
        self.extracted, self.failed, self.chunks = (
            self.extracted + images, self.failed + failed, self.chunks + 1
        )  # fmt: skip


def feature_rows(config: ExtractorConfig, output_type: str) -> Callable[[Images], DataFrame]:
    """Images -> the rows OUT holds: path, features, error."""

    def rows(images: Images) -> DataFrame:
        from pyspark.sql import functions as F

        from .spark import check_input, features_column

        check_input(images.frame, images.column, images.input_type, sample=False)
        result = features_column(  # path_col: --on-error raise names the file
            images.column, config, with_errors=True, input_type=images.input_type, path_col="path"
        )
        features = F.col("r.features")
        if output_type == "vector":
            from .ml import to_vector

            features = to_vector(features)
        return images.frame.select("path", result.alias("r")).select(
            "path", features.alias("features"), F.col("r.error").alias("error")
        )

    return rows


def open_store(spark: SparkSession, output: str) -> Store:
    local = local_path(output)
    return LocalStore(local) if local is not None else HadoopStore(spark, output)


class Run:
    """One `featurex extract` into OUT, chunk by chunk. Spark jobs happen in `execute` only."""

    def __init__(
        self,
        spark: SparkSession,
        store: Store,
        source: Source,
        rows: Callable[[Images], DataFrame],
    ) -> None:
        self.spark = spark
        self.store = store
        self.source = source
        self.rows = rows  # images -> path, features, error

    def prepare(
        self, wanted: dict[str, str], resume: bool, overwrite: bool, ran: str | None = None
    ) -> pd.DataFrame:
        """Make OUT ready for a run with fingerprint `wanted` (checked with check_output
        first); return what OUT holds (nothing unless resuming).

        The manifest records the precision asked for (the fingerprint's, which a resume must
        match) and the precisions that ran (`ran`, None where the driver cannot tell): bf16
        asked on a CPU without bf16 runs fp32, and a resume on another machine may differ.
        """
        started = _committed(self.store.list())
        if started and overwrite:  # check_output saw featurex's files and nothing else
            self.store.delete("")
        if not (started and resume):  # a new OUT, or one whose run committed nothing
            self.store.delete(META)
            self.store.mkdirs(META)
            manifest: dict[str, Any] = {"format": FORMAT, "fingerprint": wanted, "created": _now()}
        else:
            manifest = _manifest(self.store) or {}
        record = manifest.setdefault("precision", {"asked": wanted["precision"], "ran": []})
        if (ran or "unknown") not in record["ran"]:
            record["ran"].append(ran or "unknown")
        self.store.write_text(MANIFEST, json.dumps(manifest, indent=2) + "\n")
        held = recover(self.store)
        self.store.mkdirs(RECORDS)
        return held

    def execute(self, plan: Plan, committed: Callable[[int], None]) -> Totals:
        """Featurize and commit: changed inputs first (their files are rewritten), then the
        new ones in chunks of `plan.every`. `committed(n)` follows each commit."""
        totals = Totals()
        try:
            for file, changed in plan.changed.groupby("file", sort=True):
                n, failed = self._rewrite(str(file), changed)
                totals.add(n, failed)
                committed(n)
            number = 1 + max(
                (int(m[1]) for m in map(_CHUNK_RE.match, self.store.list()) if m), default=0
            )
            for chunk in plan.chunks():
                n, failed = self._add(f"chunk-{number:06d}.parquet", chunk)
                number += 1
                totals.add(n, failed)
                committed(n)
        except BaseException:
            try:  # what was committed stays; the chunk in flight goes
                self.store.delete(PENDING)
            except Exception:  # the next --resume removes it
                log.debug("could not remove %s", PENDING, exc_info=True)
            raise
        return totals

    def _featurize(self, inputs: pd.DataFrame) -> tuple[DataFrame, Any]:
        """The rows of these inputs, and an Observation that counts the failed ones."""
        from functools import reduce

        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        empty = (inputs["size"] == 0).fillna(False).to_numpy(bool)
        # Read by featurex's reader: every path with --input-type path, and the files whose
        # names Spark's sources hide.
        reader = ~empty & (
            inputs["load"].map(spark_hides).to_numpy(bool) | (self.source.input_type == "path")
        )
        spark = ~empty & ~reader
        parts = [self.source.images(inputs.loc[spark, "load"].tolist())] if spark.any() else []
        if reader.any():
            rows = inputs.loc[reader]
            parts.append(self.source.by_reader(rows["path"].tolist(), rows["load"].tolist()))
        if empty.any():
            parts.append(self.source.empty(inputs.loc[empty, "path"].tolist()))
        rows = reduce(lambda a, b: a.unionByName(b), map(self.rows, parts))
        failed = Observation()
        return rows.observe(failed, F.count("error").alias("n")), failed

    def _write(self, rows: DataFrame, record: pd.DataFrame) -> str:
        """Spark writes the rows into PENDING as one file, checked to hold a row for each
        input of `record`; returns its name."""
        (
            rows.repartition(1)  # after featurization: one file per chunk, renamed in one step
            .sortWithinPartitions("path")
            .write.mode("overwrite")
            .option("maxRecordsPerFile", 0)
            .parquet(self.store.uri(PENDING))
        )
        parts = [n for n in self.store.list(PENDING) if n.endswith(".parquet") and n[0] not in "_."]
        if len(parts) != 1:
            raise RuntimeError(f"expected one Parquet file from Spark, got {sorted(parts)}")
        part = f"{PENDING}/{parts[0]}"
        written = self.store.parquet_rows(part)
        if written != len(record):  # say, an input deleted under spark.sql.files.ignoreMissingFiles
            raise RuntimeError(f"Spark wrote {written} rows for {len(record)} inputs")
        return part

    def _add(self, file: str, chunk: pd.DataFrame) -> tuple[int, int]:
        """A new chunk: its record first, then the rename that commits it."""
        rows, failed = self._featurize(chunk)
        part = self._write(rows, chunk)
        self.store.write_text(_record_name(file), _record(file, chunk))
        self.store.rename(part, file)  # the commit
        self.store.delete(PENDING)
        log.info("committed %s: %d images", file, len(chunk))
        return len(chunk), _count(failed)

    def _rewrite(self, file: str, changed: pd.DataFrame) -> tuple[int, int]:
        """Inputs that changed since their rows in `file` were written: the file is written
        again, with their new rows and its other rows, and replaces the old one."""
        from pyspark.sql import functions as F

        old = _read_record(self.store, _record_name(file))
        paths = changed["path"].tolist()
        rows, failed = self._featurize(changed)
        kept = self.spark.read.parquet(self.store.uri(file)).where(~F.col("path").isin(paths))
        record = pd.concat([old[~old["path"].isin(paths)], changed], ignore_index=True)
        part = self._write(rows.unionByName(kept), record)
        self.store.rename(part, file)  # the commit: old rows out, new rows in, one step
        self.store.write_text(_record_name(file), _record(file, record.sort_values("path")))
        self.store.delete(PENDING)
        log.info("rewrote %s: %d changed images", file, len(changed))
        return len(changed), _count(failed)


def _count(observation: Any) -> int:
    """The failed images a chunk's Observation counted. For the summary line only: a stage
    that Spark runs again (a lost executor's shuffle output) may count its rows twice."""
    return int(observation.get["n"])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
