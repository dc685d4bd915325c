"""`featurex.list_images`: every file under the inputs is an image or a counted omission with
its reason, names that Spark's file sources hide included (issue 26, item 1). No Spark but
the last test, which runs no job."""

from __future__ import annotations

import os
from pathlib import Path

import messy
import pytest
from images import jpeg
from pyspark.sql import SparkSession

import featurex as fx
from featurex import _listing


def test_every_file_of_the_messy_folder_is_an_image_or_a_counted_omission(tmp_path: Path) -> None:
    fates = messy.build(tmp_path)
    found = fx.list_images(tmp_path)
    inputs = {name for name, fate in fates.items() if fate in ("row", "error")}
    assert found.paths == sorted(str(tmp_path / name) for name in inputs)
    assert found.omitted == {
        "not an image": sorted(str(tmp_path / n) for n, f in fates.items() if f == "not an image"),
        "macOS ._ file": sorted(
            str(tmp_path / n) for n, f in fates.items() if f == "macOS metadata"
        ),
    }
    assert found.found == len(fates) == 28 and len(found) == 23
    # Spark's file sources hide these; featurex lists them like any other.
    for hidden in ("_DSC0001.JPG", "_archive/old1.jpg", ".thumbnails/t1.jpg", "nested/.hidden.png",
                   "empty.jpg", "日本/左/写真.jpg", "café/crème brûlée.jpg"):  # fmt: skip
        assert str(tmp_path / hidden) in found.paths, hidden
    assert found.summary() == (
        "28 files: 23 images; 3 not images (.DS_Store, _SUCCESS, notes.txt); "
        "2 macOS ._ files (._Grace Hopper.JPG, ._b.JPEG)"
    )


def test_a_glob_and_files_named_directly(tmp_path: Path) -> None:
    fates = messy.build(tmp_path)
    pngs = fx.list_images(tmp_path, glob="*.{png,PNG}")
    assert sorted(Path(p).name for p in pngs) == [".hidden.png", "broken.png", "gray.PNG",
                                                  "menu.png", "old2.png", "rgba.png", "右.png"]  # fmt: skip
    assert pngs.found == len(fates)
    assert len(pngs.omitted["not matching the glob '*.{png,PNG}'"]) == len(fates) - 7 - 2
    # Named directly, a file is an input whatever its name; an AppleDouble file never is.
    named = fx.list_images(tmp_path / "_DSC0001.JPG", tmp_path / "notes.txt",
                           f"file:{tmp_path / '._Grace Hopper.JPG'}")  # fmt: skip
    assert named.paths == [str(tmp_path / "_DSC0001.JPG"), str(tmp_path / "notes.txt")]
    assert named.omitted == {"macOS ._ file": [str(tmp_path / "._Grace Hopper.JPG")]}
    # A "._" name holding a photo, not AppleDouble's header, is a photo.
    (tmp_path / "._real.jpg").write_bytes(jpeg(20, 20, 1))
    assert str(tmp_path / "._real.jpg") in fx.list_images(tmp_path).paths
    with pytest.raises(FileNotFoundError, match="input not found"):
        fx.list_images(tmp_path / "missing")


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("*.jpg", ["a.jpg", ".jpg", "_a.jpg"], ["a.JPG", "a.jpeg", "a.jpg.txt"]),
        ("img?.{png,jp*g}", ["img1.png", "img2.jpeg", "img3.jpg"], ["img10.png", "img1.gif"]),
        ("[!_]*", ["a", "b_"], ["_a"]),
        ("[^a-c]x", ["dx"], ["ax", "cx"]),
        ("a\\*b", ["a*b"], ["axb"]),
        ("{a,b{c,d}}", ["a", "bc", "bd"], ["b", "bcd"]),
    ],
)
def test_globs_read_as_hadoops_path_glob_filter(
    pattern: str, yes: list[str], no: list[str]
) -> None:
    matches = _listing.glob_matcher(pattern)
    assert all(matches(n) for n in yes), pattern
    assert not any(matches(n) for n in no), pattern


def test_a_link_back_up_the_tree_is_listed_once(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(jpeg(20, 20, 2))
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    assert fx.list_images(tmp_path).paths == [str(tmp_path / "a" / "x.jpg")]


def test_the_commands_hadoop_listing_of_a_remote_folder_finds_what_the_local_walk_finds(
    tmp_path: Path, spark: SparkSession
) -> None:
    from featurex._inputs import Source

    messy.build(tmp_path)
    local = {e.relative: (e.size, e.mtime) for e in _listing.walk(str(tmp_path))}
    source = Source(spark, [], "bytes", None)
    remote = list(source._walk_hadoop(f"file://{tmp_path}"))  # as for hdfs: or s3a:
    assert {e.relative: (e.size, e.mtime) for e in remote} == local
    assert all(e.path.startswith("file:/") for e in remote)
