"""No OpenMP oversubscription: the decode threads' torch ops run on their own thread, the
forward pass keeps the threads the task was given (OMP_NUM_THREADS, as Spark sets it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent

# The transform runs in the decode threads: it notes the threads torch would use there and
# the threads the process has, then runs an op big enough for torch to go parallel (where an
# OpenMP team of OMP_NUM_THREADS would start, per decode thread).
SCRIPT = """
import json, os, sys, threading
sys.path[:0] = [{tests!r}]
import torch
import featurex as fx
from images import jpeg

seen = {{"decode": set(), "forward": set(), "threads": 0}}

def transform(image):
    if threading.current_thread().name.startswith("featurex-decode"):  # not the load's calls
        seen["decode"].add(torch.get_num_threads())
        seen["threads"] = max(seen["threads"], len(os.listdir("/proc/self/task")))
    x = torch.rand(3, 256, 256)
    return (x.mul(2).add(1))[:, :224, :224].contiguous()

class Probe(torch.nn.Module):
    def forward(self, x):
        seen["forward"].add(torch.get_num_threads())
        return x.mul(3).mean(dim=(2, 3))

engine = fx.FeatureExtractor(Probe, weights=None, device="cpu", transform=transform,
                             decode_threads=3, batch_size=4)
_ = engine.loaded  # the load's own threads (the main thread's OpenMP team) exist by now
loaded = len(os.listdir("/proc/self/task"))
for _ in range(3):
    features, errors = engine.extract([jpeg(64, 48, seed=i) for i in range(24)])
    assert errors == [None] * 24
print(json.dumps({{"decode": sorted(seen["decode"]), "forward": sorted(seen["forward"]),
                  "loaded": loaded, "threads": seen["threads"]}}))
"""


def _run(omp_threads: int) -> dict[str, object]:
    import os

    env = dict(os.environ, OMP_NUM_THREADS=str(omp_threads))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(tests=str(TESTS))],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_decode_threads_run_torch_on_one_thread_and_the_forward_keeps_the_tasks() -> None:
    seen = _run(2)
    assert seen["decode"] == [1]  # each decode thread: no OpenMP team of its own
    assert seen["forward"] == [2]  # the forward pass: the task's two threads
    # While decoding, the process runs the threads it had once the model was loaded and the
    # 3 decode threads, no more (without the fix: an OpenMP thread more per decode thread).
    assert seen["threads"] <= seen["loaded"] + 3, seen


def test_a_gpu_task_decodes_on_as_many_threads_as_it_has_cores() -> None:
    # A GPU is starved by CPU decoding, so the host side takes the task's cores, and no more
    # (torch's thread count follows OMP_NUM_THREADS, which Spark sets to spark.task.cpus).
    import torch

    from featurex.models import default_decode_threads

    before = torch.get_num_threads()
    try:
        for cores in (1, 3):
            torch.set_num_threads(cores)
            assert default_decode_threads(torch.device("cuda", 0)) == cores
            assert default_decode_threads(torch.device("cpu")) == 1  # the model is the CPU's work
    finally:
        torch.set_num_threads(before)
