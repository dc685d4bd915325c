"""Listing image files: every file under the inputs, hidden names included, each one either
an image to featurize or left out for a reason that is counted. No Spark.

Spark's file sources (binaryFile, image, parquet, ...) drop names that start with "_" or "."
wherever they are (Hadoop's hidden-path filter: `_DSC0001.JPG`, everything under `_archive/`)
and files of 0 bytes, whatever `pathGlobFilter` or `recursiveFileLookup` say. featurex lists
the files itself instead, so that nothing goes missing without a word:

- a file with an image extension (any case) is an image, whatever its name;
- a macOS AppleDouble file (`._name`, the resource fork macOS writes beside a file on a
  foreign filesystem) is left out: it is metadata, never an image;
- any other file is left out as "not an image" (with a glob: "not matching" it);
- a file named directly is an image whatever its name: the user chose it.

`list_images` is the public face; the CLI lists local inputs with the same walk and
classifies remote ones (listed through Hadoop) with the same rules.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ImageListing", "list_images"]

NOT_IMAGE = "not an image"
APPLE_DOUBLE = "macOS ._ file"
# The summary's plural of each reason.
_PLURALS = {NOT_IMAGE: "not images", APPLE_DOUBLE: "macOS ._ files"}
# AppleDouble's magic number, the first 4 bytes of every `._` file macOS writes.
_APPLE_DOUBLE_MAGIC = b"\x00\x05\x16\x07"


@dataclass(frozen=True)
class Entry:
    """One file: its path as listed, where it was found, its size (bytes) and modification
    time (microseconds, at Hadoop's millisecond resolution), None where unknown."""

    path: str  # a local absolute path, or a URI
    root: str  # the INPUT it was found under, as given
    relative: str  # its name relative to that INPUT, "/"-separated, for messages
    size: int | None
    mtime: int | None
    explicit: bool = False  # named directly as an INPUT


@dataclass(frozen=True)
class ImageListing:
    """The files under some inputs: the images, and the files left out with their reasons.

    `paths` are sorted: local files as absolute paths, remote ones as the URIs they were
    listed under. Zero-byte files are kept (Spark's file sources skip them): featurex gives
    each a null and the reason "empty input (0 bytes)". Every file found is in `paths` or in
    exactly one list of `omitted`.
    """

    paths: list[str]
    omitted: dict[str, list[str]] = field(default_factory=dict)  # reason -> paths

    @property
    def found(self) -> int:
        """Files found: images plus files left out."""
        return len(self.paths) + sum(map(len, self.omitted.values()))

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def summary(self) -> str:
        """One line: "28 files: 23 images; 3 not images (...); 2 macOS ._ files (...)"."""
        counted = plural(len(self.paths), "image", "images")
        left = describe_omitted(self.omitted, short=True)
        return f"{plural(self.found, 'file', 'files')}: {counted}" + (f"; {left}" if left else "")


def list_images(*paths: str | os.PathLike[str], glob: str | None = None) -> ImageListing:
    """The image files under `paths` (folders, listed recursively, or files), as featurex's
    command line lists them: every file, names that Spark's file sources hide included
    (`_DSC0001.JPG`, `_archive/`, `.thumbnails/`), zero-byte files included.

    A file is an image when its extension is one featurex decodes (any case), or, with
    `glob`, when its name matches that pattern (Hadoop's syntax: `*`, `?`, `[abc]`, `{a,b}`);
    a file named directly is always taken. macOS `._` AppleDouble files are never images.
    Local paths and `file:` URIs are listed here; other URIs through pyarrow's filesystems
    (s3://, gs://, hdfs://, where installed and configured), as featurex reads them.

    To featurize them, make a column of the paths and read it with `input_type="path"`::

        found = featurex.list_images("/data/photos")
        print(found.summary())  # "28 files: 23 images; 3 not images (...); 2 macOS ._ files"
        df = spark.createDataFrame([(p,) for p in found.paths], "path string")
        df = df.withColumn("features", featurex.image_features("path", input_type="path"))
    """
    if not paths:
        raise ValueError("list_images() needs at least one path")
    entries = [e for p in paths for e in walk(os.fspath(p))]
    images, omitted = classify(entries, glob)
    return ImageListing(sorted({e.path for e in images}), omitted_paths(omitted))


# ---------------------------------------------------------------- walking


def local_path(path: str) -> str | None:
    """The local filesystem path of a plain path or a file: URI, or None for another URI."""
    if path.startswith("file:"):
        return urlsplit(path).path
    return None if "://" in path else path


def walk(root: str) -> Iterator[Entry]:
    """Every file under `root` (a folder, listed recursively, or a file named directly)."""
    local = local_path(root)
    if local is None:
        yield from _walk_remote(root)
        return
    top = os.path.abspath(local)
    try:
        info = os.stat(top)
    except FileNotFoundError:
        raise FileNotFoundError(f"input not found: {root!r}") from None
    if not stat.S_ISDIR(info.st_mode):
        yield _entry(top, root, os.path.basename(top), info, explicit=True)
        return
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(top, followlinks=True):
        here = os.stat(folder)
        if (here.st_dev, here.st_ino) in seen:  # a link back up the tree: listed once
            dirs[:] = []
            continue
        seen.add((here.st_dev, here.st_ino))
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            try:
                info = os.stat(path)
            except OSError:  # a dangling link: listed, to fail with its reason
                info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
                yield _entry(path, root, os.path.relpath(path, top), info)


def _entry(
    path: str, root: str, relative: str, info: os.stat_result, explicit: bool = False
) -> Entry:
    # Hadoop (and so Spark's listing and earlier runs' records) has milliseconds, truncated.
    mtime = info.st_mtime_ns // 1_000_000 * 1000
    relative = relative.replace(os.sep, "/")
    return Entry(path, root, relative, int(info.st_size), mtime, explicit)


def _walk_remote(root: str) -> Iterator[Entry]:
    """A remote folder or file, through pyarrow's filesystem for its URI."""
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(root)
    parts = urlsplit(root)
    prefix = f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("s3", "gs", "gcs") else ""
    authority = "" if prefix else f"{parts.scheme}://{parts.netloc}"

    def uri(path: str) -> str:
        return f"{prefix}/{path}" if prefix else f"{authority}{path}"

    info = filesystem.get_file_info(inner)
    if info.type == fs.FileType.NotFound:
        raise FileNotFoundError(f"input not found: {root!r}")
    if info.type == fs.FileType.File:
        yield Entry(root, root, info.base_name, info.size, _micros(info), explicit=True)
        return
    selector = fs.FileSelector(inner, recursive=True)
    base = inner.rstrip("/") + "/"
    for item in sorted(filesystem.get_file_info(selector), key=lambda i: i.path):
        if item.type == fs.FileType.File:
            relative = item.path.removeprefix(base)
            yield Entry(
                uri(item.path.removeprefix(prefix)), root, relative, item.size, _micros(item)
            )


def _micros(info: Any) -> int | None:
    mtime_ns = info.mtime_ns
    return None if mtime_ns is None else int(mtime_ns) // 1_000_000 * 1000


# ---------------------------------------------------------------- sorting them out


def classify(
    entries: Iterable[Entry], glob: str | None
) -> tuple[list[Entry], dict[str, list[Entry]]]:
    """The entries that are images, and those left out by reason (in listing order)."""
    matches = image_name if glob is None else glob_matcher(glob)
    not_matching = NOT_IMAGE if glob is None else f"not matching the glob {glob!r}"
    images: list[Entry] = []
    omitted: dict[str, list[Entry]] = {}
    for entry in entries:
        name = entry.relative.rsplit("/", 1)[-1]
        if name.startswith("._") and _is_apple_double(entry):
            reason: str | None = APPLE_DOUBLE
        elif entry.explicit or matches(name):
            reason = None
        else:
            reason = not_matching
        if reason is None:
            images.append(entry)
        else:
            omitted.setdefault(reason, []).append(entry)
    return images, omitted


def _is_apple_double(entry: Entry) -> bool:
    """A `._` file is AppleDouble metadata when it starts with its magic number (read for
    local files, 4 bytes; a remote one is judged by its name)."""
    local = local_path(entry.path)
    if local is None:
        return True
    try:
        with open(local, "rb") as f:
            return f.read(4) == _APPLE_DOUBLE_MAGIC
    except OSError:
        return False  # unreadable: an input, to fail with its reason


def omitted_paths(omitted: dict[str, list[Entry]]) -> dict[str, list[str]]:
    return {reason: sorted(e.path for e in entries) for reason, entries in omitted.items()}


def describe_omitted(omitted: dict[str, list[str]], names: int = 5, short: bool = False) -> str:
    """ "3 not images (.DS_Store, _archive/_SUCCESS, notes.txt); 2 macOS ._ files (...)": each
    reason with its count and its first files (`short`: their names alone)."""
    parts = []
    for reason, paths in sorted(omitted.items(), key=lambda item: (-len(item[1]), item[0])):
        shown = [_name(p) if short else p for p in paths[:names]]
        more = f", and {len(paths) - names} more" if len(paths) > names else ""
        label = _PLURALS.get(reason, reason) if len(paths) != 1 else reason
        parts.append(f"{len(paths)} {label} ({', '.join(shown)}{more})")
    return "; ".join(parts)


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# ---------------------------------------------------------------- names


@cache
def image_extensions() -> tuple[str, ...]:
    """The file name extensions of the formats featurex decodes, as Pillow names them."""
    from PIL import Image

    from .decode import IMAGE_FORMATS

    Image.init()
    formats = {*IMAGE_FORMATS, "MPO"}  # MPO: a camera's JPEG with a second frame
    return tuple(sorted(e[1:] for e, f in Image.registered_extensions().items() if f in formats))


def image_name(name: str) -> bool:
    """Whether a file name has an image extension, in any case."""
    ext = name.rpartition(".")[2].lower()
    return "." in name and ext in _lower_extensions()


@cache
def _lower_extensions() -> frozenset[str]:
    return frozenset(e.lower() for e in image_extensions())


@cache
def glob_matcher(pattern: str) -> Any:
    """A file name test for a glob in Hadoop's syntax (that of Spark's `pathGlobFilter`):
    `*`, `?`, `[abc]`, `[!a-c]` or `[^a-c]`, `{a,b}` (nested), and `\\` escapes."""
    return re.compile(_glob_regex(pattern), re.DOTALL).fullmatch


def _glob_regex(pattern: str) -> str:
    out: list[str] = []
    depth = 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                i = end
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:  # an unclosed brace: Hadoop refuses the pattern
        raise ValueError(f"glob {pattern!r} has an unclosed '{{'")
    return "".join(out)


# Characters Java's URI keeps as they are in a path (RFC 2396's pchar, ";" and "/"); other
# ASCII characters are percent-encoded, and so are non-ASCII spaces and controls.
_URI_PATH_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'():@&=+$,;/"
)


def java_uri(path: str) -> str:
    """A local absolute path as Hadoop's `Path.toUri().toString()` spells it (what Spark's
    image source calls a row's origin): `file:///a%20b/café.jpg`."""
    import unicodedata

    out = []
    for c in path:
        if c in _URI_PATH_SAFE:
            out.append(c)
        elif ord(c) >= 0x80 and not (
            unicodedata.category(c) in ("Zs", "Zl", "Zp") or unicodedata.category(c) == "Cc"
        ):
            out.append(c)
        else:
            out.append("".join(f"%{b:02X}" for b in c.encode("utf-8")))
    return "file://" + "".join(out)
