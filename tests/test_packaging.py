"""The wheel: the package, py.typed, the `featurex` command and the extras."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib.metadata import requires
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "featurex", source / "featurex",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    out = tmp_path_factory.mktemp("dist")
    # The venv's setuptools builds it where there is one (no download); Python 3.12+ venvs
    # have none, and pip fetches the build backend as usual.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", *isolation,
         "--wheel-dir", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (built,) = out.glob("featurex-*.whl")
    return zipfile.ZipFile(built)


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


def test_the_wheel_ships_every_module_and_py_typed(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "featurex/py.typed" in names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "featurex").rglob("*.py")}
    assert modules <= names and {"featurex/ml.py", "featurex/models/hf.py"} <= modules
    assert not [n for n in names if n.startswith("tests/")]
    # int8's built-in calibration photos are package data.
    photos = {p.relative_to(ROOT).as_posix() for p in (ROOT / "featurex/_calibration").glob("*")}
    assert len(photos) == 6 and photos <= names


def test_the_wheel_installs_the_featurex_command(wheel: zipfile.ZipFile) -> None:
    entry_points = _dist_info(wheel, "entry_points.txt")
    assert "[console_scripts]" in entry_points
    assert "featurex = featurex.cli:main" in entry_points.splitlines()


def test_the_connect_and_dev_extras(wheel: zipfile.ZipFile) -> None:
    metadata = Parser().parsestr(_dist_info(wheel, "METADATA"))
    assert {"connect", "dev"} <= set(metadata.get_all("Provides-Extra") or [])
    extras = metadata.get_all("Requires-Dist") or []
    assert any(r.startswith("pyspark[connect]") and 'extra == "connect"' in r for r in extras)
    for tool in ("pytest", "mypy", "ruff"):
        assert any(r.startswith(tool) and 'extra == "dev"' in r for r in extras), tool
    # pyspark's own connect extra is what brings the gRPC client.
    connect = [r.split(";")[0] for r in requires("pyspark") or [] if 'extra == "connect"' in r]
    assert any(r.startswith("grpcio") for r in connect), connect


def test_each_model_family_is_an_extra(wheel: zipfile.ZipFile) -> None:
    metadata = Parser().parsestr(_dist_info(wheel, "METADATA"))
    # Metadata spells extras normalized (PEP 685): pip takes featurex[open_clip] as open-clip.
    assert {"hf", "timm", "open-clip"} <= set(metadata.get_all("Provides-Extra") or [])
    extras = metadata.get_all("Requires-Dist") or []
    for extra, package in (
        ("hf", "transformers"),
        ("timm", "timm"),
        ("open-clip", "open_clip_torch"),
    ):
        assert any(r.startswith(package) and f'extra == "{extra}"' in r for r in extras), extra
