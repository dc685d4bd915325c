"""Threads and OpenMP in a worker: the forward pass keeps the task's cores, and the decode
threads never start OpenMP teams of their own.

What torch does here (measured on Linux, torch's libgomp): OpenMP's thread count is a
per-thread setting, and torch initializes it in each new thread from OMP_NUM_THREADS, which
Spark sets to `spark.task.cpus` in its Python workers. So every decode thread that runs one
torch op on a tensor past the parallel grain size (a resize, a ToTensor, a Normalize) starts
its own OpenMP team of that size, whose threads stay and spin: 4 decode threads with
OMP_NUM_THREADS=2 left 4 more threads in the process (tests/test_threads.py counts them).
`torch.set_num_threads(1)` is not the fix: it is process-wide (the forward pass would lose its
threads) and it clears oneDNN's primitive cache on every call. The fix is OpenMP's own
per-thread setting, `omp_set_num_threads(1)`, called in each decode thread after torch's
per-thread initialization, which would otherwise overwrite it.
"""

from __future__ import annotations

import ctypes
import logging
from functools import lru_cache
from typing import Any

import torch

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _openmp() -> Any:
    """The OpenMP runtime torch runs on (libgomp, libiomp5 or libomp), as loaded in this
    process, or None where it cannot be found."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "omp" in line.rsplit("/", 1)[-1]})
    except OSError:  # not Linux
        return None
    for path in paths:
        if ".so" not in path:
            continue
        try:
            library = ctypes.CDLL(path)
            library.omp_set_num_threads  # noqa: B018  (raises if the symbol is missing)
            return library
        except (OSError, AttributeError):
            continue
    return None


def one_openmp_thread() -> None:
    """Make this thread's torch ops run on this thread alone: for decode and read threads
    (a ThreadPoolExecutor initializer). The process's other threads keep their setting."""
    torch.get_num_threads()  # torch's per-thread OpenMP initialization, done now
    library = _openmp()
    if library is None:
        log.debug("no OpenMP runtime found: decode threads keep torch's thread count")
        return
    library.omp_set_num_threads(1)


def task_cores() -> int:
    """The cores this process's task may use: torch's thread count in the calling thread,
    which follows OMP_NUM_THREADS (Spark sets it to spark.task.cpus)."""
    return max(1, torch.get_num_threads())
