"""The README's Python examples run against the test session, each set in a folder of its own.

The quickstart and the recipes run exactly as written. The reference examples further down ask
for pretrained weights, which cannot be downloaded on the test machines: there
`weights="DEFAULT"` runs as `weights=None` (the same code path after loading), nothing else
changed. The options table is checked against the config, the command and the ML stage.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pyspark.sql import SparkSession

import featurex as fx
from featurex.cli import build_parser
from featurex.config import OPTIONS, ExtractorConfig
from featurex.ml import PARAMS

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
SAMPLES = sorted(p.name for p in (ROOT / "samples").iterdir())


def _section(title: str) -> str:
    """A "## " section of the README, its heading included."""
    start = README.index(f"\n## {title}\n") + 1
    end = README.find("\n## ", start)
    return README[start:end]


def _python(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


QUICKSTART = _python(_section("Quickstart"))
RECIPES = _python(_section("What to do with the vectors"))
REFERENCE = [code for code in _python(README) if code not in QUICKSTART + RECIPES]


@pytest.fixture
def folder(spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The examples' working directory: they read samples/ and write out/, relative paths
    that the JVM resolves against its own working directory (Hadoop's local filesystem's)."""
    monkeypatch.chdir(tmp_path)
    hadoop = spark._jvm.org.apache.hadoop.fs  # type: ignore[attr-defined]
    local = hadoop.FileSystem.getLocal(spark._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
    before = local.getWorkingDirectory()
    local.setWorkingDirectory(hadoop.Path(str(tmp_path)))
    yield tmp_path
    local.setWorkingDirectory(before)


def _run(blocks: list[str], where: str) -> dict[str, object]:
    namespace: dict[str, object] = {}
    for code in blocks:
        exec(compile(code, f"README.md ({where})", "exec"), namespace)
    return namespace


def test_the_readme_starts_with_a_quickstart_of_at_most_30_lines() -> None:
    lines = README.splitlines()
    assert lines[0] == "# featurex" and lines[1] == lines[4] == "" and lines[5] == "## Quickstart"
    assert len(_section("Quickstart").rstrip().splitlines()) <= 30
    # Random weights, said plainly.
    assert len(QUICKSTART) == 1 and "weights=None" in QUICKSTART[0]
    assert "RANDOM weights" in QUICKSTART[0]


def test_the_quickstart_runs_as_written_on_samples(
    spark: SparkSession, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "samples").symlink_to(ROOT / "samples")
    namespace = _run(QUICKSTART, "Quickstart")
    printed = capsys.readouterr().out
    assert len([ln for ln in printed.splitlines() if "file:" in ln]) == len(SAMPLES) == 6
    rows = namespace["features"].collect()  # type: ignore[attr-defined]
    assert sorted(Path(r["path"]).name for r in rows) == SAMPLES
    norms = [np.linalg.norm(r["features"]) for r in rows]
    assert all(len(r["features"]) == 512 for r in rows) and np.allclose(norms, 1, atol=1e-5)


def test_the_recipes_run_as_written_on_real_spark(
    spark: SparkSession, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = folder / "samples"
    shutil.copytree(ROOT / "samples", samples)
    with Image.open(samples / "chelsea.jpg") as photo:  # a near-duplicate: smaller, recompressed
        photo.resize((photo.width * 9 // 10, photo.height * 9 // 10)).save(
            samples / "chelsea-copy.jpg", quality=85
        )
    try:
        _check_recipes(_run(QUICKSTART + RECIPES, "recipes"), samples, folder)
    finally:
        spark.sql("DROP TABLE IF EXISTS image_features")
    assert "(7, 512) float32" in capsys.readouterr().out


def _check_recipes(namespace: dict[str, object], samples: Path, folder: Path) -> None:
    names = {f"file:{samples}/{n}": n for n in [*SAMPLES, "chelsea-copy.jpg"]}

    joined = namespace["with_vectors"].collect()  # type: ignore[attr-defined]
    assert sorted(names[r["path"]] for r in joined) == sorted(names.values())
    assert all(r["length"] > 0 and len(r["features"]) == 512 for r in joined)
    # The image itself, then its copy, by the exact dot product and by LSH.
    nearest = namespace["nearest"].collect()  # type: ignore[attr-defined]
    assert [names[r["path"]] for r in nearest[:2]] == ["chelsea.jpg", "chelsea-copy.jpg"]
    assert nearest[0]["cosine"] == pytest.approx(1, abs=1e-5) and nearest[2]["cosine"] < 1 - 1e-3
    lsh = namespace["neighbours"].collect()  # type: ignore[attr-defined]
    assert [names[r["path"]] for r in lsh[:2]] == ["chelsea.jpg", "chelsea-copy.jpg"]
    groups = namespace["groups"].collect()  # type: ignore[attr-defined]
    assert [(names[g["a"]], [names[p] for p in g["near_duplicates"]]) for g in groups] == [
        ("chelsea-copy.jpg", ["chelsea.jpg"])
    ]
    # The hand-off: ids, paths and unit vectors on disk, and as arrays.
    written = pd.read_parquet(folder / "out" / "vectors")
    assert list(written.columns) == ["id", "path", "features"] and written["id"].is_unique
    assert sorted(names[p] for p in written["path"]) == sorted(names.values())
    matrix = namespace["matrix"]
    assert isinstance(matrix, np.ndarray) and matrix.shape == (7, 512)
    assert matrix.dtype == np.float32 and np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)


def test_the_reference_examples_run(
    spark: SparkSession, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "samples").symlink_to(ROOT / "samples")
    offline = [code.replace('weights="DEFAULT"', "weights=None") for code in REFERENCE]
    namespace = _run(offline, "reference")
    printed = capsys.readouterr().out
    assert "(3, 512) [None, 'not an image: cannot identify the format', 'null input']" in printed
    assert "\n2048\n" in printed
    assert "'loads':" in printed
    assert namespace["out"].columns[-1] == "features"  # type: ignore[attr-defined]


def test_every_python_example_is_run() -> None:
    assert len(REFERENCE) >= 3 and len(RECIPES) >= 4
    assert sorted(QUICKSTART + RECIPES + REFERENCE) == sorted(_python(README))


def _options_table() -> dict[str, list[str]]:
    """The README's options table: option -> [flag, ML param, default], "—" where none."""
    header = "| option | command line | `ImageFeaturizer` | default | meaning |"
    lines = README[README.index(header) :].splitlines()[2:]
    rows = {}
    for line in lines[: next(i for i, ln in enumerate(lines) if not ln.startswith("|"))]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        first = [re.match(r"`([^`]*)`|(—)", c) for c in cells[:3]]
        rows[first[0][1]] = [m[1] or m[2] for m in first[1:]] + [cells[3]]  # type: ignore[index]
    return rows


def test_the_options_table_maps_every_option_to_its_flag_and_param() -> None:
    flags = build_parser().parse_args(["extract", "in", "-o", "out"]).words.flags
    stage = fx.ImageFeaturizer(weights="none")
    table = _options_table()
    options = ("model", "weights", *OPTIONS)
    assert set(options) <= set(table), set(options) - set(table)
    defaults = {f.name: f.default for f in dataclasses.fields(ExtractorConfig)}
    for option, (flag, param, default) in table.items():
        if option in options:
            # A flag and a param for each option, but transform (a callable is neither).
            expected = ("—", "—") if option == "transform" else (flags[option], PARAMS[option])
            assert (flag, param) == expected, option
            assert default.replace('"', "'").replace(",", "").strip("`") == repr(defaults[option])
        else:  # the Column's own options (with_errors, input_type, ...): names that exist
            assert flag == "—" or flag in flags.values(), option
            assert param == "—" or stage.hasParam(param), option
