"""The per-process model cache: keyed by the frozen config, locked, bounded (LRU).

A Spark Python worker is reused across tasks and jobs (`spark.python.worker.reuse`), so a
model built here once serves every later batch with the same config in that process.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from .config import ExtractorConfig
    from .models import LoadedModel

T = TypeVar("T")

# Two models per worker by default: enough to switch between two configs in one job without
# thrashing, small enough that a ResNet-152 pair stays well under a GiB.
DEFAULT_MAXSIZE = 2


class KeyedCache(Generic[T]):
    """A thread-safe LRU that builds each missing value once, even under concurrent misses."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"cache maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._entries: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self.loads = 0
        self.hits = 0
        self._per_key: dict[str, list[int]] = {}  # key -> [loads, hits]

    def get(self, key: str, build: Callable[[], T]) -> T:
        with self._lock:
            if key in self._entries:
                return self._hit(key)
            key_lock = self._building.setdefault(key, threading.Lock())
        # Build outside the cache lock, so a slow load does not block other keys.
        with key_lock:
            with self._lock:
                if key in self._entries:  # another thread built it while we waited
                    return self._hit(key)
            # On failure the key lock stays: threads waiting on it retry the build in turn.
            value = build()
            with self._lock:  # publish and release the key in one step: no second build
                self.loads += 1
                self._per_key.setdefault(key, [0, 0])[0] += 1
                self._entries[key] = value
                while len(self._entries) > self.maxsize:
                    self._entries.popitem(last=False)
                self._building.pop(key, None)
            return value

    def _hit(self, key: str) -> T:
        self.hits += 1
        self._per_key.setdefault(key, [0, 0])[1] += 1
        self._entries.move_to_end(key)
        return self._entries[key]

    def info(self, key: str | None = None) -> dict[str, int]:
        with self._lock:
            if key is None:
                loads, hits, size = self.loads, self.hits, len(self._entries)
            else:
                loads, hits = self._per_key.get(key, (0, 0))
                size = int(key in self._entries)
            return {"loads": loads, "hits": hits, "size": size, "maxsize": self.maxsize}


def _maxsize_from_env() -> int:
    raw = os.environ.get("FEATUREX_CACHE_SIZE", str(DEFAULT_MAXSIZE))
    try:
        return max(1, int(raw))
    except ValueError:
        return DEFAULT_MAXSIZE


MODELS: KeyedCache[LoadedModel] = KeyedCache(_maxsize_from_env())


def cache_info(config: ExtractorConfig | None = None) -> dict[str, int]:
    """Model cache statistics of this process: loads, hits, size and maxsize.

    With a config, the counts for that config's model only (size is 1 while it is cached).
    """
    return MODELS.info(None if config is None else config.key)
