"""Build featurex's wheel from a copy of this checkout (setuptools writes build/ and
*.egg-info next to the sources)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def build_wheel(workdir: Path, version: str | None = None) -> Path:
    """The wheel, built under `workdir`; `version` replaces `featurex.__version__` in the copy."""
    source = workdir / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "featurex", source / "featurex",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    if version is not None:
        init = source / "featurex" / "__init__.py"
        text, n = re.subn(r'^__version__ = ".*"$', f'__version__ = "{version}"',
                          init.read_text(), flags=re.M)  # fmt: skip
        assert n == 1, "featurex/__init__.py has no __version__ line"
        init.write_text(text)
    out = workdir / "dist"
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
    return built
