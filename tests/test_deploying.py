"""What docs/gpu.md ("GPU clusters") ships: the GPU discovery script, run against a
stand-in `nvidia-smi` (no GPU here) that prints what the real one prints."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "docker" / "gpu-discovery.sh"


def _discover(tmp_path: Path, nvidia_smi: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\n{nvidia_smi}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(SCRIPT)], capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize(
    ("output", "addresses"),
    [(r"printf '0\n1\n'", ["0", "1"]), (r"printf '3\n'", ["3"]), ("true", [])],
)
def test_gpu_discovery_prints_the_resource_spark_expects(
    tmp_path: Path, output: str, addresses: list[str]
) -> None:
    result = _discover(tmp_path, output)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "gpu", "addresses": addresses}


def test_gpu_discovery_fails_when_nvidia_smi_does(tmp_path: Path) -> None:
    # Spark then refuses to start the worker or executor, instead of running it without GPUs.
    assert _discover(tmp_path, "exit 9").returncode == 9
