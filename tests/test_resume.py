"""Resumable, chunked `featurex extract`: a run killed with SIGKILL and resumed, files added
and changed later, a chunk that fails, and the state a crash can leave OUT in."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from cluster import _descendants, alive
from images import jpeg
from models_for_tests import assert_close
from pyspark.sql import SparkSession

import featurex as fx
from featurex import _runs
from featurex.cli import EXIT_USAGE, main
from featurex.config import ExtractorConfig
from featurex.errors import ConfigError

SCRIPT = Path(sys.executable).with_name("featurex")
# A cheap torchvision model keeps these end-to-end runs short.
MODEL = ("--model", "mobilenet_v3_small", "--weights", "none")
CONFIG = ExtractorConfig(model="mobilenet_v3_small", weights=None)


def _images(folder: Path, first: int, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img{i:04d}.jpg" for i in range(first, first + count)]
    for i, path in enumerate(paths, start=first):
        path.write_bytes(jpeg(40 + i % 7, 30 + i % 5, i))
    return paths


def _env() -> dict[str, str]:
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("chunk-*.parquet"))}


def _uri(path: Path) -> str:
    return f"file:{path}"


def _kill_run_after_first_commit(args: list[str], out: Path) -> None:
    """Start `featurex extract` in a process group of its own; once a chunk is committed and
    the next one is in flight (Spark's temporary folder exists), SIGKILL the group."""
    proc = subprocess.Popen([str(SCRIPT), *args], env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    in_flight = out / "_featurex" / "pending" / "_temporary"
    deadline = time.monotonic() + 240
    try:
        while not ((out / "chunk-000001.parquet").exists() and in_flight.exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                output = proc.stdout.read().decode() if proc.stdout else ""
                why = f"the run ended (exit {proc.returncode}) before a chunk was in flight"
                pytest.fail(f"{why}:\n{output[-3000:]}")
            time.sleep(0.05)
    finally:
        family = _descendants({proc.pid}) | {proc.pid}  # pyspark's daemon has a group of its own
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        for pid in alive(family):  # what left the group: the Python workers' daemon
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while alive(family) and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.slow
def test_a_run_killed_mid_chunk_resumes_with_every_input_once(
    tmp_path: Path, spark: SparkSession, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    paths = [*_images(inputs, 0, 239), inputs / "zz-broken.jpg"]  # sorted last: after the kill
    paths[-1].write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out"
    args = ["extract", str(inputs), "--output", str(out), "--resume", "--commit-every", "40",
            *MODEL, "--master", "local[2]", "--quiet"]  # fmt: skip
    _kill_run_after_first_commit(args, out)

    kept = _mtimes(out)
    committed = 40 * len(kept)
    assert 1 <= len(kept) < 6, kept
    before = set(pq.read_table(out, columns=["path"]).column("path").to_pylist())
    # The interrupted chunk left Spark's temporary files; neither reader sees them.
    temporary = [p for p in (out / "_featurex" / "pending").rglob("*") if p.is_file()]
    assert temporary or (out / "_featurex" / "pending" / "_temporary").is_dir()
    assert spark.read.parquet(str(out)).count() == committed
    assert ds.dataset(out, format="parquet").count_rows() == committed == len(before)
    assert pq.read_table(out).column_names == ["path", "features", "error"]

    resumed = subprocess.run([str(SCRIPT), *args], env=_env(), capture_output=True, text=True,
                             timeout=400)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = resumed.stdout.strip().splitlines()[-1]
    assert summary.startswith(
        f"featurex: {240 - committed} images, 1 failed, {committed} skipped as already done, "
    )
    assert {k: v for k, v in _mtimes(out).items() if k in kept} == kept  # untouched
    table = pq.read_table(out).to_pandas()
    lost = len(before - set(table["path"]))
    doubled = len(table) - table["path"].nunique()
    assert (lost, doubled) == (0, 0)
    assert sorted(table["path"]) == sorted(_uri(p) for p in paths)
    assert spark.read.parquet(str(out)).count() == 240
    assert not (out / "_featurex" / "pending").exists()
    broken = table.set_index("path").loc[_uri(paths[-1])]
    assert broken["features"] is None and broken["error"]
    assert table["error"].notna().sum() == 1
    with capsys.disabled():  # the figures quoted in the closing note
        print(f"\nkill-and-resume: {len(kept)} chunks kept ({committed} rows), {lost} rows "
              f"lost, {doubled} rows doubled, {240 - committed} featurized after the kill")  # fmt: skip

    # New files: only they are featurized, into a new chunk; the earlier files stay as they
    # were. (In this process, through the steps the command takes, to save a Spark start.)
    earlier = _mtimes(out)
    added = _images(inputs, 239, 25)
    todo, totals = _run(spark, inputs, _runs.LocalStore(str(out)), every=40)
    assert (todo.total, todo.skipped, totals.extracted, totals.chunks) == (265, 240, 25, 1)
    now = _mtimes(out)
    assert {k: now[k] for k in earlier} == earlier and len(now) == len(earlier) + 1
    table = pq.read_table(out).to_pandas()
    assert sorted(table["path"]) == sorted(_uri(p) for p in paths + added)

    # Another model is refused before any work, naming both.
    code = main([*args[:-1], "--model", "resnet18"])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "model 'mobilenet_v3_small' (this run: 'resnet18')" in err and err.count("\n") == 1
    assert _mtimes(out) == now


def _run(
    spark: SparkSession,
    inputs: Path,
    store: _runs.Store,
    every: int,
    resume: bool = True,
    committed: Callable[[int], None] = lambda n: None,
) -> tuple[_runs.Plan, _runs.Totals]:
    """One run through the same steps as the CLI's, in this process's session."""
    wanted = _runs.fingerprint(CONFIG, "bytes", "array")
    _runs.check_output(store, wanted, resume, overwrite=False)
    source = _runs.Source(spark, [str(inputs)], "bytes", None)
    job = _runs.Run(spark, store, source, _runs.feature_rows(CONFIG, "array"))
    todo = _runs.plan(source.listing(), job.prepare(wanted, resume, False), every)
    return todo, job.execute(todo, committed)


@pytest.mark.slow
def test_a_changed_file_is_featurized_again_and_its_old_row_replaced(
    tmp_path: Path, spark: SparkSession
) -> None:
    # Through Hadoop's FileSystem (file: here), as for an hdfs: or s3a: OUT.
    inputs, out = tmp_path / "in", tmp_path / "out"
    paths = _images(inputs, 0, 6)
    store = _runs.HadoopStore(spark, f"file://{out}")
    todo, totals = _run(spark, inputs, store, every=3)
    assert (todo.total, todo.skipped, totals.extracted, totals.chunks) == (6, 0, 6, 2)
    first = _mtimes(out)
    old = pq.read_table(out).to_pandas().set_index("path")

    changed = paths[1]
    changed.write_bytes(jpeg(90, 70, 99))  # new content: new size and time
    todo, totals = _run(spark, inputs, store, every=3)
    assert (todo.skipped, len(todo.changed), len(todo.new)) == (5, 1, 0)
    assert (totals.extracted, totals.chunks) == (1, 1)
    now = _mtimes(out)
    assert now.keys() == first.keys()
    assert now["chunk-000001.parquet"] != first["chunk-000001.parquet"]  # rewritten
    assert now["chunk-000002.parquet"] == first["chunk-000002.parquet"]
    table = pq.read_table(out).to_pandas().set_index("path")
    assert sorted(table.index) == sorted(_uri(p) for p in paths)  # one row per path
    expected, _ = fx.FeatureExtractor.from_config(CONFIG).extract([changed.read_bytes()])
    assert_close(np.stack([table.loc[_uri(changed), "features"]]), expected)
    others = [_uri(p) for p in paths if p != changed]
    assert all(np.array_equal(table.loc[p, "features"], old.loc[p, "features"]) for p in others)
    record = json.loads((out / "_featurex" / "chunks" / "chunk-000001.json").read_text())
    assert record["sizes"][record["paths"].index(_uri(changed))] == changed.stat().st_size

    todo, totals = _run(spark, inputs, store, every=3)  # nothing left to do
    assert (todo.skipped, totals.extracted) == (6, 0) and _mtimes(out) == now


@pytest.mark.slow
def test_a_failed_chunk_stops_the_run_and_keeps_what_was_committed(
    tmp_path: Path, spark: SparkSession
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    paths = _images(inputs, 0, 9)
    store = _runs.LocalStore(str(out))

    def vanish(rows: int) -> None:  # after the first commit, an input of the second chunk goes
        paths[4].unlink(missing_ok=True)

    with pytest.raises(Exception, match=r"img0004\.jpg"):
        _run(spark, inputs, store, every=3, committed=vanish)
    assert list(_mtimes(out)) == ["chunk-000001.parquet"]
    assert not (out / "_featurex" / "pending").exists()
    assert sorted(os.listdir(out / "_featurex" / "chunks")) == ["chunk-000001.json"]

    todo, totals = _run(spark, inputs, store, every=3)  # the next run continues from there
    assert (todo.total, todo.skipped, totals.extracted) == (8, 3, 5)
    assert pq.read_table(out).num_rows == 8


# ---------------------------------------------------------------- without Spark


def _out_with_manifest(out: Path, config: ExtractorConfig = CONFIG) -> _runs.LocalStore:
    store = _runs.LocalStore(str(out))
    store.mkdirs(_runs.RECORDS)
    manifest = {"format": _runs.FORMAT, "fingerprint": _runs.fingerprint(config, "bytes", "array")}
    store.write_text(_runs.MANIFEST, json.dumps(manifest))
    return store


def test_resume_with_another_model_exits_2_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    _write_chunk(_out_with_manifest(out), 1, ["a"])
    (tmp_path / "in").mkdir()
    code = main(["extract", str(tmp_path / "in"), "--output", str(out), "--resume",
                 "--model", "resnet18", "--weights", "none"])  # fmt: skip
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == (
        f"featurex: error: --resume: output {str(out)!r} holds features made differently: "
        "model 'mobilenet_v3_small' (this run: 'resnet18'). Resume with the same settings, "
        "pass --overwrite to start over, or another --output\n"
    )


def test_the_fingerprint_names_weights_precision_and_preprocessing(tmp_path: Path) -> None:
    import torch
    import torchvision

    base = _runs.fingerprint(CONFIG, "bytes", "array")
    from featurex import __version__

    assert base["featurex"] == __version__ and base["weights"] == "none (random init, seed 0)"
    named = _runs.fingerprint(ExtractorConfig(model="resnet18"), "bytes", "array")
    assert named["weights"] == "ResNet18_Weights.IMAGENET1K_V1"  # DEFAULT, resolved
    # The preprocessing that is used: random init's own; the named weights' preset (232 px
    # for ResNet-50's DEFAULT, V2).
    assert base["transform"] == (
        "ImageClassification( crop_size=[224] resize_size=[256] mean=[0.485, 0.456, 0.406] "
        "std=[0.229, 0.224, 0.225] interpolation=InterpolationMode.BILINEAR )"
    )
    v2 = _runs.fingerprint(ExtractorConfig(model="resnet50"), "bytes", "array")["transform"]
    assert "resize_size=[232]" in v2 and "crop_size=[224]" in v2
    checkpoint = tmp_path / "m.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), checkpoint)
    config = ExtractorConfig(model="mobilenet_v3_small", weights=str(checkpoint))
    stat = checkpoint.stat()
    assert _runs.fingerprint(config, "bytes", "array")["weights"] == (
        f"{checkpoint}@{stat.st_size}:{stat.st_mtime_ns}"
    )
    bf16 = ExtractorConfig(model="mobilenet_v3_small", weights=None, precision="bf16")
    fast = ExtractorConfig(model="mobilenet_v3_small", weights=None, fast_decode=True)
    assert _runs.differences(base, _runs.fingerprint(bf16, "bytes", "array")) == [
        "precision 'fp32' (this run: 'bf16')"
    ]
    assert _runs.differences(base, _runs.fingerprint(fast, "image", "vector")) == [
        "fast_decode 'False' (this run: 'True')",
        "input_type 'bytes' (this run: 'image')",
        "output_type 'array' (this run: 'vector')",
    ]
    # Batch size and device do not change the features: a resume may change them.
    other = ExtractorConfig(model="mobilenet_v3_small", weights=None, batch_size=7, device="cpu")
    assert _runs.fingerprint(other, "bytes", "array") == base


def test_normalize_int8_calibration_and_hf_weights_are_in_the_fingerprint(tmp_path: Path) -> None:
    from families import save_tiny_dinov2

    base = _runs.fingerprint(CONFIG, "bytes", "array")
    unit = ExtractorConfig(model="mobilenet_v3_small", weights=None, normalize=True)
    assert _runs.differences(base, _runs.fingerprint(unit, "bytes", "array")) == [
        "normalize 'False' (this run: 'True')"
    ]
    int8 = ExtractorConfig(model="mobilenet_v3_small", weights=None, precision="int8")
    assert _runs.differences(base, _runs.fingerprint(int8, "bytes", "array")) == [
        "calibration 'unset' (this run: 'calibration=builtin')",
        "fast_decode 'False' (this run: 'True')",  # int8's default
        "precision 'fp32' (this run: 'int8')",
    ]
    folder = save_tiny_dinov2(tmp_path / "dinov2")
    made = _runs.fingerprint(ExtractorConfig(model=f"hf:{folder}"), "bytes", "array")
    assert made["weights"].startswith(f"{folder}@")  # the folder's files, fingerprinted
    (folder / "model.safetensors").touch()
    again = _runs.fingerprint(ExtractorConfig(model=f"hf:{folder}"), "bytes", "array")
    assert _runs.differences(made, again) == [
        f"weights {made['weights']!r} (this run: {again['weights']!r})"
    ]


def test_an_existing_output_needs_resume_or_overwrite(tmp_path: Path) -> None:
    wanted = _runs.fingerprint(CONFIG, "bytes", "array")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "part-0.parquet").write_bytes(b"")
    store = _runs.LocalStore(str(plain))
    not_ours = (
        r"output '.*plain' was not written by featurex extract \(no _featurex/manifest.json\), "
        r"and featurex replaces only its own output: pass another --output, or empty or remove "
        r"that folder yourself$"
    )
    for resume, overwrite, flag in ((False, False, ""), (True, False, "--resume: "),
                                    (False, True, "--overwrite: ")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"^{re.escape(flag)}{not_ours}"):
            _runs.check_output(store, wanted, resume=resume, overwrite=overwrite)
    ours = _out_with_manifest(tmp_path / "ours")
    _write_chunk(ours, 1, ["a"])
    with pytest.raises(ConfigError, match=r"pass --overwrite to replace it \(or --resume"):
        _runs.check_output(ours, wanted, resume=False, overwrite=False)
    _runs.check_output(ours, wanted, resume=True, overwrite=False)
    _runs.check_output(ours, wanted, resume=False, overwrite=True)
    # featurex's output and a file of the user's: --overwrite would delete that file too.
    (tmp_path / "ours" / "notes.txt").write_text("mine")
    with pytest.raises(
        ConfigError, match=r"also holds files featurex did not write \('notes.txt'\)"
    ):
        _runs.check_output(ours, wanted, resume=False, overwrite=True)
    _runs.check_output(_runs.LocalStore(str(tmp_path / "new")), wanted, True, False)
    (tmp_path / "empty").mkdir()
    _runs.check_output(_runs.LocalStore(str(tmp_path / "empty")), wanted, False, False)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match=r"is a file, which featurex does not replace"):
        _runs.check_output(_runs.LocalStore(str(tmp_path / "a-file")), wanted, False, True)


def test_an_output_whose_run_committed_nothing_is_as_good_as_new(tmp_path: Path) -> None:
    # What a run that failed (or was killed) before its first commit leaves: the manifest,
    # maybe a void record and Spark's pending files. The same command runs again; so does
    # another one (a different model: nothing was made with the first).
    out = tmp_path / "out"
    store = _out_with_manifest(out)
    (out / "_featurex" / "pending" / "_temporary").mkdir(parents=True)
    store.write_text(_runs._record_name("chunk-000001.parquet"), "{}")
    (out / "notes.txt").write_text("the user's")
    other = _runs.fingerprint(ExtractorConfig(model="resnet18", weights=None), "bytes", "array")
    for resume, overwrite in ((False, False), (True, False), (False, True)):
        _runs.check_output(store, other, resume=resume, overwrite=overwrite)
    job = _runs.Run(None, store, None, None)  # type: ignore[arg-type]  # prepare needs no Spark
    assert job.prepare(other, resume=False, overwrite=True).empty
    manifest = json.loads((out / "_featurex" / "manifest.json").read_text())
    assert manifest["fingerprint"] == other
    assert sorted(os.listdir(out)) == ["_featurex", "notes.txt"]  # featurex deletes only its own
    assert sorted(os.listdir(out / "_featurex")) == ["chunks", "manifest.json"]
    assert os.listdir(out / "_featurex" / "chunks") == []


def _write_chunk(store: _runs.LocalStore, number: int, paths: list[str]) -> None:
    file = f"chunk-{number:06d}.parquet"
    rows = _runs._identities(paths, [1] * len(paths), [2] * len(paths))
    store.write_text(_runs._record_name(file), _runs._record(file, rows))
    frame = pd.DataFrame({"path": paths, "features": [[0.0]] * len(paths), "error": None})
    frame.to_parquet(store.uri(file))


def test_recovery_undoes_what_a_crash_left_half_done(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = _out_with_manifest(out)
    _write_chunk(store, 1, ["a", "b"])
    # A crash after chunk 2's record was written, before its rename: the record is void.
    _write_chunk(store, 2, ["c"])
    os.remove(store.uri("chunk-000002.parquet"))
    # Spark's output of the chunk in flight, and a record write cut short.
    (out / "_featurex" / "pending" / "_temporary" / "0").mkdir(parents=True)
    (out / "_featurex" / "pending" / "part-0.parquet").write_bytes(b"PAR1")
    (out / "_featurex" / "chunks" / ".x1234.tmp").write_text("{")
    held = _runs.recover(store)
    assert held["path"].tolist() == ["a", "b"] and set(held["file"]) == {"chunk-000001.parquet"}
    assert sorted(os.listdir(out / "_featurex" / "chunks")) == ["chunk-000001.json"]
    assert not (out / "_featurex" / "pending").exists()

    listing = _runs._identities(["a", "b", "c", "d"], [1, 5, 1, 1], [2, 2, 2, 2])
    listing.insert(1, "load", listing["path"])
    todo = _runs.plan(listing, held, every=1)
    assert (todo.total, todo.skipped) == (4, 1)
    assert todo.changed["path"].tolist() == ["b"]  # its size differs
    assert [c["path"].tolist() for c in todo.chunks()] == [["c"], ["d"]]

    # A chunk file without a record cannot be matched to inputs: refused, not doubled.
    pd.DataFrame({"path": ["e"]}).to_parquet(store.uri("chunk-000007.parquet"))
    with pytest.raises(ConfigError, match=r"chunk-000007\.parquet has no record"):
        _runs.recover(store)


def test_paths_from_a_listing_file_are_matched_by_path_alone() -> None:
    held = _runs._identities(["x", "y"], [None, None], [None, None]).assign(file="chunk-1")
    listing = _runs._identities(["x", "y", "z"], [None, None, None], [None, None, None])
    listing.insert(1, "load", listing["path"])
    todo = _runs.plan(listing, held, every=10)
    assert (todo.skipped, len(todo.changed), todo.new["path"].tolist()) == (2, 0, ["z"])
