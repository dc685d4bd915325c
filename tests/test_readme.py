"""The README's Python examples run as written, against the test session.

Pretrained weights cannot be downloaded on the test machines, so `weights="DEFAULT"` is run
as `weights=None` (the same code path after loading); nothing else is changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

ROOT = Path(__file__).parents[1]


def _examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    api = text[text.index("## Python API") :]
    return re.findall(r"```python\n(.*?)```", api, flags=re.S)


def test_readme_has_examples() -> None:
    assert len(_examples()) >= 3


def test_readme_examples_run(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)  # the examples read samples/
    namespace: dict[str, object] = {}
    for code in _examples():
        offline = code.replace('weights="DEFAULT"', "weights=None")
        exec(compile(offline, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "(3, 512) [None, 'not an image: cannot identify the format', 'null input']" in printed
    assert "\n2048\n" in printed
    assert "'loads':" in printed
    assert namespace["out"].columns[-1] == "features"  # type: ignore[attr-defined]
