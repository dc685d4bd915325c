"""Reading a path input: local paths, file: URIs, and what pyarrow's filesystems serve
(hdfs://, s3://, gs:// where installed and configured). Many reads run at once: the engine
keeps `read_ahead` of them in flight, ahead of decoding, because object storage answers each
one after tens of milliseconds."""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

from .header import DecodeError, reason

_FILESYSTEMS: dict[str, Any] = {}
_FS_LOCK = threading.Lock()


def read_path(path: str) -> bytes:
    """The bytes of a path or URI, or a DecodeError naming it and why.

    On S3 this is one HEAD and one GET (counted on a loopback S3 server): Arrow asks for the
    object's size, then reads it whole in one ranged GET. Arrow's C++ API skips the HEAD when
    given the size, but pyarrow's Python API takes a path only, and a path column holds no
    sizes; featurex adds no request of its own.
    """
    parts = urlsplit(path)
    try:
        if parts.scheme in ("", "file") or len(parts.scheme) == 1:  # 1 letter: a Windows drive
            local = parts.path if parts.scheme == "file" else path
            if parts.scheme == "file" and not os.path.exists(local):
                local = unquote(local)  # Spark and Hadoop may percent-encode URIs
            with open(local, "rb") as f:
                return f.read()
        filesystem, inner = _filesystem(path)
        with filesystem.open_input_stream(inner) as stream:
            return bytes(stream.read())
    except Exception as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else reason(exc)
        raise DecodeError(f"cannot read {path!r}: {why}") from exc


def _filesystem(uri: str) -> tuple[Any, str]:
    """pyarrow's filesystem for a URI, one per scheme and host per process."""
    from pyarrow import fs

    parts = urlsplit(uri)
    root = f"{parts.scheme}://{parts.netloc}"
    with _FS_LOCK:
        if root not in _FILESYSTEMS:
            _FILESYSTEMS[root] = fs.FileSystem.from_uri(uri)[0]
    inner = parts.netloc + parts.path if parts.scheme in ("s3", "gs", "gcs") else parts.path
    return _FILESYSTEMS[root], inner
