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


# Without a network (the Hub's name does not resolve: ".invalid" never does) and without
# HF_HUB_OFFLINE: an audit hook counts the connections each step tries; logging shows
# huggingface_hub's retries.
HUB_SCRIPT = r"""
import json, logging, sys, time
connects = []
ASKS = ("socket.connect", "socket.getaddrinfo")
sys.addaudithook(lambda event, args: connects.append(event) if event in ASKS else None)
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
import featurex as fx
result = {}
# The process's first call to the Hub is the one huggingface_hub retries.
for name, model, weights in (("absent_default", "hf:featurex-tests/absent", "DEFAULT"),
                             ("absent", "hf:featurex-tests/absent", None),
                             ("none", "hf:featurex-tests/tiny", None),
                             ("default", "hf:featurex-tests/tiny", "DEFAULT")):
    before, started = len(connects), time.perf_counter()
    try:
        dim = fx.FeatureExtractor(model, weights=weights, device="cpu").dim
        result[name] = {"dim": dim}
    except fx.FeatureXError as exc:
        result[name] = {"error": f"{type(exc).__name__}: {exc}"}
    result[name].update(connects=len(connects) - before, seconds=time.perf_counter() - started)
print(json.dumps(result))
"""


def test_hugging_face_without_a_network_fails_at_once_and_a_random_init_never_asks(
    tmp_path: Path,
) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from families import fake_hub_repo, save_tiny_dinov2

    cache = tmp_path / "hub"
    fake_hub_repo(cache, "featurex-tests/tiny", save_tiny_dinov2(tmp_path / "dinov2"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(cache),
           "HF_ENDPOINT": "http://hub.invalid", "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run([sys.executable, "-c", HUB_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    # --weights none with the config in the cache: the Hub is never asked.
    assert result["none"]["connects"] == 0 and result["none"]["dim"] > 0, result
    # Pretrained weights ask the Hub which commit main is; it does not answer, the cache does.
    assert result["default"]["dim"] == result["none"]["dim"], result
    # Not in the cache: one line at once (huggingface_hub alone retries 5 times over about
    # 20 s), no doubled period before "Offline?".
    for absent in (result["absent"], result["absent_default"]):
        assert absent["error"].startswith(
            "WeightsUnavailableError: cannot resolve hf:featurex-tests/absent: it is not in the "
            "Hugging Face cache, and the Hub cannot be reached ("
        ), absent
        assert "\n" not in absent["error"] and ".." not in absent["error"]
        assert absent["connects"] <= 2 and absent["seconds"] < 10, absent
    assert "Retrying in" not in done.stderr and "Retry 1/5" not in done.stderr
