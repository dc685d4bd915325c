"""Importing featurex never touches the network (issue 4, item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent

# Runs first in a fresh interpreter: an audit hook sees every socket operation made through
# Python (including those of libraries that catch the error and carry on), records it and
# refuses it. Only then is featurex imported.
SCRIPT = r"""
import json, sys

NETWORK = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
           "socket.gethostbyaddr", "socket.getnameinfo", "socket.sendto", "socket.sendmsg",
           "urllib.Request"}
attempts = []

def refuse(event, args):
    if event in NETWORK:
        attempts.append(f"{event} {args!r}"[:200])
        raise OSError(f"network access refused by the test: {event}")

sys.addaudithook(refuse)

import featurex, featurex.cli, featurex.compat, featurex.spark
config = featurex.ExtractorConfig(model="resnet18", weights=None)
features, errors = featurex.FeatureExtractor("resnet18", weights=None, device="cpu").extract([None])
result = {"imported": sorted(m for m in sys.modules if m.startswith("featurex")),
          "dim": features.shape[1], "key": config.key, "attempts": list(attempts)}

# The control: pretrained weights must be downloaded, and the hook sees and stops that.
try:
    featurex.FeatureExtractor("resnet18", device="cpu").dim
except Exception as exc:
    result["control"] = f"{type(exc).__name__}: {exc}"
result["control_attempts"] = attempts[len(result["attempts"]):]
print(json.dumps(result))
"""


def test_importing_and_configuring_featurex_makes_no_network_call(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path / "torch")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert {"featurex", "featurex.cli", "featurex.spark", "featurex.config"} <= set(
        result["imported"]
    )
    assert result["dim"] == 512 and result["key"].startswith("'resnet18'|None|0|")
    assert result["attempts"] == []
    # The trap works: loading pretrained weights tried to connect, was refused, and featurex
    # said what to do instead.
    assert any(
        "socket.getaddrinfo" in a or "urllib.Request" in a for a in result["control_attempts"]
    )
    assert result["control"].startswith("WeightsUnavailableError: cannot download"), result
