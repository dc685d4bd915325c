"""Every Python example of the README and of docs/ runs against the test session.

The quickstart runs on samples/. The README's API brief and recipes, and each docs page's
examples (in order, one namespace a page), run on a copy of samples/ that also holds a
near-copy of one photo, a corrupt file, an empty file and `_DSC0001.JPG`: the files a user's
folder holds, and that a recipe must survive. Examples that ask for pretrained torchvision
weights (`weights="DEFAULT"`) run as written, offline, as docs/models.md tells users to: the
weights files in the `TORCH_HOME` of the driver and the workers (here, random weights saved
under the real files' names). The options table is checked against the config, the command
and the ML stage, and every relative link against the files and their headings.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from images import jpeg
from PIL import Image
from pyspark.sql import SparkSession

import featurex as fx
from featurex.cli import build_parser
from featurex.config import OPTIONS, ExtractorConfig
from featurex.ml import PARAMS

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
PAGES = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
SAMPLES = sorted(p.name for p in (ROOT / "samples").iterdir())
# What the recipes' folder holds besides samples/: binaryFile reads the first two.
EXTRAS = ["chelsea-copy.jpg", "corrupt.jpg", "empty.jpg", "_DSC0001.JPG"]


def _section(text: str, title: str) -> str:
    """A "## " section of a page, its heading included."""
    start = text.index(f"\n## {title}\n") + 1
    end = text.find("\n## ", start)
    return text[start : end if end != -1 else None]


def _python(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


QUICKSTART = _python(_section(README, "Quickstart"))
BRIEF = _python(_section(README, "The API in brief"))
RECIPES = _python(_section(README, "What to do with the vectors"))


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
    spark.sql("DROP TABLE IF EXISTS image_features")


@pytest.fixture
def messy(folder: Path) -> Path:
    """samples/ with a near-duplicate, a corrupt file, an empty file and a `_` name."""
    samples = folder / "samples"
    shutil.copytree(ROOT / "samples", samples)
    with Image.open(samples / "chelsea.jpg") as photo:  # a near-duplicate: smaller, recompressed
        photo.resize((photo.width * 9 // 10, photo.height * 9 // 10)).save(
            samples / "chelsea-copy.jpg", quality=85
        )
    (samples / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 a JPEG's first bytes, then text")
    (samples / "empty.jpg").write_bytes(b"")
    (samples / "_DSC0001.JPG").write_bytes(jpeg(200, 150, seed=26))  # a camera's own name
    assert sorted(p.name for p in samples.iterdir()) == sorted(SAMPLES + EXTRAS)
    return samples


@pytest.fixture(scope="module")
def pretrained(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A torch hub cache filled by hand, as docs/models.md says to do offline, for the driver
    and the Python workers: RANDOM weights under the names of torchvision's DEFAULT files, so
    that `weights="DEFAULT"` runs as written without a download."""
    home = tmp_path_factory.mktemp("torch-home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("resnet18", "resnet50"):
        url = torchvision.models.get_model_weights(name)["DEFAULT"].url
        model = torchvision.models.get_model(name, weights=None)
        torch.save(model.state_dict(), checkpoints / Path(urlparse(url).path).name)
    # The workers get the variable as `spark.executorEnv.TORCH_HOME` would give it: pyspark
    # ships `sc.environment` with each UDF made after this.
    environment = spark.sparkContext.environment
    before = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = environment["TORCH_HOME"] = str(home)
    yield home
    del environment["TORCH_HOME"]
    if before is None:
        del os.environ["TORCH_HOME"]
    else:
        os.environ["TORCH_HOME"] = before


def _run(blocks: list[str], where: str) -> dict[str, object]:
    namespace: dict[str, object] = {}
    for code in blocks:
        exec(compile(code, where, "exec"), namespace)
    return namespace


def test_the_readme_starts_with_a_quickstart_of_at_most_30_lines() -> None:
    lines = README.splitlines()
    assert lines[0] == "# featurex" and lines[1] == lines[4] == "" and lines[5] == "## Quickstart"
    assert len(_section(README, "Quickstart").rstrip().splitlines()) <= 30
    # Random weights, said plainly; the install's size on the first screen, with its command.
    assert len(QUICKSTART) == 1 and "weights=None" in QUICKSTART[0]
    assert "RANDOM weights" in QUICKSTART[0]
    first_screen = " ".join(lines[:12])
    assert re.search(r"installs [\d.]+ GB \(`du -sh\s+\.venv`\)", first_screen), first_screen


def test_the_readme_keeps_to_300_lines_and_its_reference_is_in_docs() -> None:
    assert len(README.splitlines()) <= 300
    for page in ("api.md", "models.md", "ml.md", "cli.md", "deploying.md", "gpu.md"):
        assert f"(docs/{page})" in README, page


def test_make_run_falls_back_to_random_weights_as_the_readme_says() -> None:
    makefile = (ROOT / "Makefile").read_text()
    run = makefile[makefile.index("\nrun:") : makefile.index("\ntest:")]
    # The Makefile falls back, on the command's exit code 3, saying so; featurex never does.
    assert "-eq 3" in run and "RANDOM weights" in run and run.count("--weights none") == 2
    said = " ".join(_section(README, "The two commands").split())
    assert "featurex itself never falls back to random weights" in said
    assert "exit code 3" in said and "The fallback is the Makefile's" in said


def test_the_quickstart_runs_as_written_on_samples(
    spark: SparkSession, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "samples").symlink_to(ROOT / "samples")
    namespace = _run(QUICKSTART, "README.md (Quickstart)")
    printed = capsys.readouterr().out
    assert len([ln for ln in printed.splitlines() if "file:" in ln]) == len(SAMPLES) == 6
    rows = namespace["features"].collect()  # type: ignore[attr-defined]
    assert sorted(Path(r["path"]).name for r in rows) == SAMPLES
    norms = [np.linalg.norm(r["features"]) for r in rows]
    assert all(len(r["features"]) == 512 for r in rows) and np.allclose(norms, 1, atol=1e-5)


def test_the_brief_and_the_recipes_survive_bad_files(
    spark: SparkSession, messy: Path, pretrained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = _run(QUICKSTART + BRIEF + RECIPES, "README.md (brief and recipes)")
    printed = capsys.readouterr().out
    assert "(7, 512) float32" in printed and "\n10 files: 10 images\n" in printed
    got = {name: namespace[name].collect() for name in (  # type: ignore[attr-defined]
        "checked", "with_vectors", "nearest", "neighbours", "groups", "predicted", "every")}  # fmt: skip
    # binaryFile's rows: `_` names and empty files are not among them.
    read = [*SAMPLES, "chelsea-copy.jpg", "corrupt.jpg"]
    names = {f"file:{messy}/{n}": n for n in read}

    # The brief: the corrupt file, and why.
    failed = {names[r["path"]]: r["error"] for r in got["checked"] if r["error"]}
    assert list(failed) == ["corrupt.jpg"] and failed["corrupt.jpg"]  # a reason, said
    # The table joined back: every file read, the corrupt one with null features.
    joined = {names[r["path"]]: r for r in got["with_vectors"]}
    assert sorted(joined) == sorted(read) and all(r["length"] > 0 for r in joined.values())
    assert joined.pop("corrupt.jpg")["features"] is None
    assert all(len(r["features"]) == 512 for r in joined.values())
    plain = namespace["plain"].select("file").collect()  # type: ignore[attr-defined]
    assert sorted(r["file"] for r in plain) == sorted(str(messy / n) for n in read)
    # The image itself, then its copy, by the exact dot product; the corrupt last.
    nearest = got["nearest"]
    assert [names[r["path"]] for r in nearest[:2]] == ["chelsea.jpg", "chelsea-copy.jpg"]
    assert nearest[0]["cosine"] == pytest.approx(1, abs=1e-5) and nearest[2]["cosine"] < 1 - 1e-3
    assert names[nearest[-1]["path"]] == "corrupt.jpg" and nearest[-1]["cosine"] is None
    # The groups: the photo and its copy together, led by the smaller id; every other image
    # its own group; the corrupt file in none.
    groups = {names[r["path"]]: r for r in got["groups"]}
    assert sorted(groups) == sorted(read)
    bad = groups.pop("corrupt.jpg")
    assert bad["group_id"] is None and bad["is_representative"] is False
    copy, photo = f"file:{messy}/chelsea-copy.jpg", f"file:{messy}/chelsea.jpg"
    assert {n: (r["group_id"], r["is_representative"]) for n, r in groups.items()} == {
        n: (copy, n == "chelsea-copy.jpg")
        if n.startswith("chelsea")
        else (f"file:{messy}/{n}", True)
        for n in groups
    }
    kept = sorted(names[r["path"]] for r in namespace["keep"].collect())  # type: ignore[attr-defined]
    assert kept == sorted(n for n in groups if n != "chelsea.jpg")
    # Its nearest neighbours: the copy first, itself left out.
    ranked = [(r["query"], names[r["neighbor"]], r["rank"]) for r in got["neighbours"]]
    assert [(q, n, k) for q, n, k in ranked][:1] == [(photo, "chelsea-copy.jpg", 1)]
    assert [k for *_, k in ranked] == [1, 2, 3] and "chelsea.jpg" not in [n for _, n, _ in ranked]
    # The hand-off: ids, paths and unit vectors on disk, and as arrays: the images that worked.
    written = pd.read_parquet(messy.parent / "out" / "vectors")
    assert list(written.columns) == ["id", "path", "features"] and written["id"].is_unique
    assert sorted(names[p] for p in written["path"]) == sorted(joined)
    matrix = namespace["matrix"]
    assert isinstance(matrix, np.ndarray) and matrix.shape == (7, 512)
    assert matrix.dtype == np.float32 and np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)
    # The pipeline fitted, saved, loaded and predicted without the corrupt image's row.
    predicted = {names[r["path"]]: r["prediction"] for r in got["predicted"]}
    assert sorted(predicted) == sorted(joined) and set(predicted.values()) <= {0.0, 1.0}
    # Every file, one row each: the `_` name and the empty file included.
    every = {Path(r["path"]).name: r for r in got["every"]}
    assert sorted(every) == sorted(SAMPLES + EXTRAS)
    assert every["empty.jpg"]["error"] == "empty input (0 bytes)"
    assert len(every["_DSC0001.JPG"]["features"]) == 512 and every["_DSC0001.JPG"]["error"] is None
    assert [n for n, r in every.items() if r["error"]] == ["corrupt.jpg", "empty.jpg"]


def _check_api(namespace: dict[str, object], printed: str) -> None:
    assert "(3, 512) [None, 'not an image: cannot identify the format', 'null input']" in printed
    assert "\n2048\n" in printed and "'loads':" in printed
    assert namespace["out"].columns[-1] == "features"  # type: ignore[attr-defined]
    rows = namespace["with_features"].select("path", "features").collect()  # type: ignore[attr-defined]
    assert sorted(Path(r["path"]).name for r in rows) == sorted([*SAMPLES, *EXTRAS[:2]])
    assert {len(r["features"] or []) for r in rows} == {0, 2048}


def _check_ml(namespace: dict[str, object], printed: str) -> None:
    rows = namespace["checked"].select("path", "features", "error").collect()  # type: ignore[attr-defined]
    failed = [Path(r["path"]).name for r in rows if r["error"] is not None]
    assert failed == ["corrupt.jpg"] and len(rows) == len(SAMPLES) + 2
    assert "corrupt.jpg" in printed


def _check_dedup(namespace: dict[str, object], printed: str) -> None:
    groups = {Path(r["path"]).name: r for r in namespace["groups"].collect()}  # type: ignore[attr-defined]
    assert sorted(groups) == sorted([*SAMPLES, "chelsea-copy.jpg", "corrupt.jpg"])
    assert groups["corrupt.jpg"]["group_id"] is None
    assert groups["chelsea.jpg"]["group_id"] == groups["chelsea-copy.jpg"]["path"]
    together = [n for n, r in groups.items() if r["group_id"] == groups["chelsea.jpg"]["group_id"]]
    assert sorted(together) == ["chelsea-copy.jpg", "chelsea.jpg"]
    kept = sorted(Path(p).name for p in pd.read_parquet("out/keep")["path"])
    assert kept == sorted(n for n in groups if n not in ("chelsea.jpg", "corrupt.jpg"))
    first = namespace["neighbours"].where("rank = 1").collect()  # type: ignore[attr-defined]
    assert [Path(r["neighbor"]).name for r in first] == ["chelsea-copy.jpg"]
    assert "recall 1.0000: 1 of 1 pairs" in printed, printed


# What each page's examples must have done; a page whose examples only need to run is None.
CHECKS = {"api.md": _check_api, "dedup.md": _check_dedup, "ml.md": _check_ml}
RUN_PAGES = sorted(name for name, text in PAGES.items() if _python(text))


@pytest.mark.parametrize("page", RUN_PAGES)
def test_the_docs_examples_run_as_written(
    spark: SparkSession,
    messy: Path,
    pretrained: Path,
    capsys: pytest.CaptureFixture[str],
    page: str,
) -> None:
    namespace = _run(_python(PAGES[page]), f"docs/{page}")
    CHECKS[page](namespace, capsys.readouterr().out)


def test_every_python_example_is_run() -> None:
    assert len(BRIEF) == 1 and len(RECIPES) >= 6 and RUN_PAGES == sorted(CHECKS)
    assert sorted(QUICKSTART + BRIEF + RECIPES) == sorted(_python(README))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _headings(text: str) -> list[str]:
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return [m[2] for m in re.finditer(r"^(#{1,6}) (.+)$", prose, flags=re.M)]


DOCUMENTS = {ROOT / "README.md": README} | {ROOT / "docs" / n: t for n, t in PAGES.items()}


@pytest.mark.parametrize("path", sorted(DOCUMENTS), ids=lambda p: p.name)
def test_headings_are_unique_and_links_resolve(path: Path) -> None:
    anchors = [_slug(h) for h in _headings(DOCUMENTS[path])]
    assert len(anchors) == len(set(anchors)), anchors  # no "Spark Connect" twice
    prose = re.sub(r"```.*?```", "", DOCUMENTS[path], flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), target
        if anchor and linked.suffix == ".md":
            assert anchor in {_slug(h) for h in _headings(linked.read_text())}, target


def _options_table() -> dict[str, list[str]]:
    """docs/api.md's options table: option -> [flag, ML param, default], "—" where none."""
    header = "| option | command line | `ImageFeaturizer` | default | meaning |"
    api = PAGES["api.md"]
    lines = api[api.index(header) :].splitlines()[2:]
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
