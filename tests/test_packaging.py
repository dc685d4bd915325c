"""The wheel: the package, py.typed, the `featurex` command and the extras."""

from __future__ import annotations

import zipfile
from email.parser import Parser
from importlib.metadata import requires
from pathlib import Path

import pytest
from featurex_wheel import build_wheel

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return zipfile.ZipFile(build_wheel(tmp_path_factory.mktemp("wheel")))


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


def test_the_license_is_an_spdx_expression(wheel: zipfile.ZipFile) -> None:
    # PEP 639's field: setuptools warned about the old table form at every build.
    metadata = Parser().parsestr(_dist_info(wheel, "METADATA"))
    assert metadata["License-Expression"] == "Apache-2.0"
