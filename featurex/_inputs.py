"""Where `featurex extract`'s images come from: its INPUTs, listed once on the driver (every
file, each one an input or a counted omission: `_listing`), then read chunk by chunk.

Spark's file sources read the files whose names they accept. Those they hide (a name that
starts with "_" or ".", even named directly) are read on the executors by featurex's own
reader, as paths; files of 0 bytes, which Spark's scans skip, become rows with their reason.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._listing import Entry, classify, java_uri, local_path, walk

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from .spark import InputType

# Characters Hadoop reads as a glob in a path given to spark.read.load().
_GLOB_CHARS = re.compile(r"([\\\[\]{}*?])")


@dataclass(frozen=True)
class Images:
    """Images to featurize: a DataFrame with `path` and the input column `column`."""

    frame: DataFrame
    column: str
    input_type: InputType


@dataclass(frozen=True)
class Found:
    """The INPUTs' listing: the inputs (path, load, size, mtime; sorted, each path once),
    and the files left out, by reason (their names relative to their INPUT)."""

    inputs: pd.DataFrame
    omitted: dict[str, list[str]] = field(default_factory=dict)

    @property
    def found(self) -> int:
        """Files found (and listing lines): inputs plus files left out."""
        return len(self.inputs) + sum(map(len, self.omitted.values()))


def identities(paths: Any, sizes: Any, mtimes: Any) -> pd.DataFrame:
    """path, size (bytes) and mtime (microseconds since the epoch); None where unknown."""
    columns = {
        "path": pd.Series(paths, dtype=object),
        "size": pd.Series(sizes, dtype="Int64"),
        "mtime": pd.Series(mtimes, dtype="Int64"),
    }
    frame: pd.DataFrame = pd.DataFrame(columns)
    return frame


def spark_hides(path: str) -> bool:
    """Whether Spark's file sources skip this file even when named directly (Hadoop's
    hidden-path filter looks at the file's own name)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith(("_", "."))


class Source:
    """The INPUTs: listed once on the driver, read chunk by chunk.

    The listing names each input twice: `path`, as the output's rows name it (binaryFile's
    `path`, `file:/a b/c.jpg`; with the image source, Spark's URI for the file,
    `file:///a%20b/c.jpg`), and `load`, what it is read from (a local file's plain path).
    Files in folders are those with an image extension, or matching `glob`.
    """

    def __init__(
        self,
        spark: SparkSession | None,  # None: local INPUTs, listed only
        inputs: list[str],
        input_type: InputType,
        glob: str | None,
    ) -> None:
        self._spark = spark
        self.inputs = inputs
        self.input_type = input_type
        self.glob = glob

    def listing(self) -> pd.DataFrame:
        """path, load, size, mtime of every input, sorted by path, each path once."""
        return self.scan().inputs

    def scan(self) -> Found:
        """Every file under the INPUTs: the inputs, and the files left out by reason."""
        entries: list[Entry] = []
        lines: list[pd.DataFrame] = []
        for root in self.inputs:
            local = local_path(root)
            if self.input_type == "path" and not os.path.isdir(local or ""):
                if local is None and self._is_dir(root):
                    entries.extend(self._walk_hadoop(root))
                else:  # a file: a listing of paths or URIs, one per line
                    lines.append(self._lines(root))
            elif local is not None:
                entries.extend(walk(root))
            else:
                entries.extend(self._walk_hadoop(root))
        images, omitted = classify(entries, self.glob)
        named = [self._names(e) for e in images]
        found = pd.DataFrame(named, columns=["path", "load", "size", "mtime"])
        found = pd.concat([found, *lines], ignore_index=True)
        found = found.drop_duplicates("path").sort_values("path", ignore_index=True)
        inputs = identities(found["path"], found["size"], found["mtime"])
        inputs.insert(1, "load", found["load"].to_numpy())
        shown = {r: sorted(e.relative for e in es) for r, es in omitted.items()}
        return Found(inputs, shown)

    def _names(self, entry: Entry) -> tuple[str, str, int | None, int | None]:
        """(path, load, size, mtime): a local file's path as Spark's sources spell it, and
        its plain path to read; a remote file's URI, twice (Spark's image source URI-encodes
        it, which the Hadoop listing has already done)."""
        local = local_path(entry.path)
        if local is not None:
            path = java_uri(local) if self.input_type == "image" else f"file:{local}"
            return path, local, entry.size, entry.mtime
        path = entry.path
        if self.input_type == "image":
            path = self._hadoop_uri(entry.path)
        return path, entry.path, entry.size, entry.mtime

    def _lines(self, listing: str) -> pd.DataFrame:
        """A listing file's paths or URIs, relative ones to the listing's folder; comments
        (#) and blank lines skipped. Sizes and times unknown: read on the executors."""
        local = local_path(listing)
        if local is not None:  # read here: Spark's text source would hide "_list.txt" too
            with open(local, encoding="utf-8") as f:
                raw = f.read().splitlines()
            base = os.path.dirname(os.path.abspath(local))
        else:
            raw = [r.value for r in self.spark.read.text(listing).collect()]
            base = ""
        paths = []
        for line in raw:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            absolute = "://" in entry or entry.startswith("/") or not base
            paths.append(entry if absolute else os.path.join(base, entry))
        lines: pd.DataFrame = pd.DataFrame(
            {"path": paths, "load": paths, "size": None, "mtime": None}
        )
        return lines

    @property
    def spark(self) -> SparkSession:
        assert self._spark is not None, "a Source made for listing local INPUTs only"
        return self._spark

    # Remote INPUTs (hdfs:, s3a:, ...): listed through Hadoop's FileSystem, with the session's
    # configuration (its credentials). Needs a classic session: the CLI's own.

    def _fs(self, root: str) -> tuple[Any, Any]:
        jvm, jsc = self.spark._jvm, self.spark._jsc
        assert jvm is not None and jsc is not None, "a classic Spark session"
        path = jvm.org.apache.hadoop.fs.Path(root)
        return path.getFileSystem(jsc.hadoopConfiguration()), path

    def _is_dir(self, root: str) -> bool:
        fs, path = self._fs(root)
        return bool(fs.exists(path) and fs.getFileStatus(path).isDirectory())

    def _walk_hadoop(self, root: str) -> Iterator[Entry]:
        """Every file under a remote folder (or the file itself). `FileSystem.listFiles`
        applies no hidden-path filter; Spark's listing does."""
        fs, top = self._fs(root)
        if not fs.exists(top):
            raise FileNotFoundError(f"input not found: {root!r}")
        status = fs.getFileStatus(top)
        base = str(status.getPath().toString()).rstrip("/") + "/"
        if not status.isDirectory():
            yield Entry(str(status.getPath().toString()), root, str(status.getPath().getName()),
                        int(status.getLen()), int(status.getModificationTime()) * 1000,
                        explicit=True)  # fmt: skip
            return
        files = fs.listFiles(top, True)
        while files.hasNext():
            item = files.next()
            path = str(item.getPath().toString())
            yield Entry(path, root, path.removeprefix(base), int(item.getLen()),
                        int(item.getModificationTime()) * 1000)  # fmt: skip

    def _hadoop_uri(self, path: str) -> str:
        return str(self._fs(path)[1].toUri().toString())

    # Reading a chunk.

    def images(self, loads: list[str]) -> Images:
        """The images of a chunk that Spark's sources read: files of more than 0 bytes
        whose names they accept."""
        from pyspark.sql import functions as F

        # Explicit files: a name with glob characters must mean the file itself.
        files = [_GLOB_CHARS.sub(r"\\\1", p) for p in loads]
        reader = self.spark.read.option("recursiveFileLookup", "true")
        source = "image" if self.input_type == "image" else "binaryFile"
        local = all(local_path(p) is not None for p in loads)
        with sql_conf(self.spark, _DRIVER_STATS if local else {}):
            images = reader.format(source).load(files)  # Spark stats the files here
        if self.input_type == "image":
            frame = images.select(F.col("image.origin").alias("path"), "image")
            return Images(frame, "image", "image")
        return Images(images.select("path", "content"), "content", "bytes")

    def by_reader(self, paths: list[str], loads: list[str]) -> Images:
        """Inputs read on the executors by featurex's reader, named as the listing names
        them: listed paths, and files Spark's sources hide (`_DSC0001.JPG`, `.thumb.jpg`)."""
        rows = list(zip(paths, loads, strict=True))
        frame = self.spark.createDataFrame(rows, "path string, load string")
        return Images(frame, "load", "path")

    def empty(self, paths: list[str]) -> Images:
        """Files of 0 bytes, which Spark's file sources skip: their empty content, for the
        engine to give each its reason."""
        frame = self.spark.createDataFrame([(p, b"") for p in paths], "path string, content binary")
        return Images(frame, "content", "bytes")


# For local files, the driver stats a chunk's files itself: past 32 paths Spark lists them in
# a job of one task per path, 5-11 s for 1,000 local files here against 0.4-0.7 s on the
# driver. Remote files keep Spark's parallel listing (a stat is a round trip there).
_DRIVER_STATS = {"spark.sql.sources.parallelPartitionDiscovery.threshold": str(2**31 - 1)}


@contextlib.contextmanager
def sql_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Session settings changed for a block, then put back."""
    before: dict[str, str | None] = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)
