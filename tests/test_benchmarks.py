"""The benchmark harness: its images, and one tiny run end to end that writes what the README shows."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from featurex.models import default_batch_size

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.ceiling import per_image_ms  # noqa: E402
from benchmarks.costs import fit  # noqa: E402
from benchmarks.costs import markdown as costs_markdown  # noqa: E402
from benchmarks.images import MAX_SIDE, MIN_SIDE, make_image, make_images, photo_paths  # noqa: E402
from benchmarks.peers import parse_args as peers_args  # noqa: E402
from benchmarks.peers import runnable  # noqa: E402
from benchmarks.resume import fabricate, resume_phases, tiny_jpegs  # noqa: E402
from benchmarks.run import _rate_cell, markdown, merge_rounds  # noqa: E402


def test_benchmark_images_are_distinct_jpegs_cut_from_real_photos(tmp_path: Path) -> None:
    folder = make_images(12, tmp_path, workers=1)
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"img{i:05d}.jpg" for i in range(12)]
    assert len({hashlib.sha256(f.read_bytes()).digest() for f in files}) == 12
    for f in files:
        image = Image.open(f)
        assert image.format == "JPEG" and image.mode == "RGB"
        assert MIN_SIDE <= max(image.size) <= MAX_SIDE
    # Deterministic, and the first n images of a bigger set are the n-image set (linked).
    paths = tuple(photo_paths())
    assert make_image(3, paths) == files[3].read_bytes()
    smaller = make_images(5, tmp_path, workers=1)
    assert smaller.parent == folder.parent and len(list(smaller.iterdir())) == 5
    assert (smaller / "img00004.jpg").read_bytes() == files[4].read_bytes()
    assert {p.stem for p in paths} >= {p.stem for p in (ROOT / "samples").iterdir()}


@pytest.mark.slow
def test_benchmark_harness_writes_json_markdown_and_chart(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmarks.run", "--images", "8", "--model", "resnet18",
           "--repeats", "1", "--rounds", "1", "--variants", "row_udf,featurex", "--sweep-sizes", "",
           "--sweep-batches", "", "--subset", "4", "--ceiling-images", "4", "--out", str(out),
           "--data", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    machine = results["machine"]
    assert machine["model"] == "resnet18" and machine["cores_used"] == 2
    assert machine["cpu"] and machine["date"][:2] == "20"
    assert all(machine[k] for k in ("python", "torch", "pyspark", "featurex"))
    rows = {r["variant"]: r for r in results["variants"]}
    assert set(rows) == {"row_udf", "featurex"} and results["failed"] == []
    for row in rows.values():
        assert row["images"] == 8 and row["images_per_s"] > 0 and len(row["seconds"]) == 1
        # One model per Python worker, every worker probed, one torch thread each.
        assert 1 <= row["workers"] <= 2 and row["model_loads"] == row["workers"]
        assert row["unprobed_workers"] == [] and row["worker_torch_threads"] == [1]
        assert 100 < row["peak_worker_rss_mb"] < 4000
        # Anonymous memory: a worker holding torch and a model has well over 200 MB of it.
        assert 200 < row["peak_worker_anon_mb"] < row["peak_worker_rss_mb"]
        assert row["startup_s"] > 0 and row["warmup_s"] > 0
        assert row["max_rel_dev"] < 1e-4 and row["min_cosine"] > 0.9999  # the same function
    assert rows["featurex"]["ratio_to_featurex"] == 1.0
    assert rows["row_udf"]["ratio_to_featurex"] > 0
    assert results["size_sweep"] == [] and results["batch_sweep"] == []
    table = (out / "results.md").read_text()
    cpu_batch = default_batch_size(torch.device("cpu"))
    assert f"| featurex default | auto ({cpu_batch}) | " in table
    assert "| seed-style broadcast row UDF | - | " in table
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and min(Image.open(io.BytesIO(png)).size) > 200
    assert len(list((tmp_path / "data").glob("*/n8/*.jpg"))) == 8
    # The ceiling ran in the same run, for featurex's precision (fp32), and gave its share.
    fp32 = results["ceiling"]["fp32"]
    assert 0 < fp32["decode_ms"] < fp32["forward_ms"]
    assert fp32["bound_images_per_s"] == pytest.approx(
        2e3 / (fp32["decode_ms"] + fp32["forward_ms"]), rel=1e-6
    )
    share = rows["featurex"]["share_of_ceiling"]
    assert share == pytest.approx(rows["featurex"]["images_per_s"] / fp32["bound_images_per_s"])
    assert f"| fp32 | {fp32['decode_ms']:.1f} | " in table and f"{share:.0%} |" in table
    assert f"| {fp32['engine_ms']:.1f} (" in table  # the engine alone, beside the bound


def test_rounds_merge_into_the_median_round_and_the_worst_memory() -> None:
    def result(rate: float, rss: float, loads: int) -> dict[str, object]:
        return {"images_per_s": rate, "seconds": [1.0 / rate], "peak_worker_rss_mb": rss,
                "peak_worker_anon_mb": rss / 2, "model_loads": loads, "workers": 2}  # fmt: skip

    rounds = [result(20.0, 900, 2), result(10.0, 1000, 2), result(30.0, 950, 3)]
    row = merge_rounds(rounds)
    assert row["images_per_s"] == 20.0 and row["seconds"] == [0.05]  # the median round's
    assert row["round_images_per_s"] == [20.0, 10.0, 30.0]
    assert row["peak_worker_rss_mb"] == 1000 and row["peak_worker_anon_mb"] == 500
    assert row["model_loads"] == 3  # a reload in any round shows
    assert merge_rounds(rounds[:2])["images_per_s"] == 10.0  # even count: the lower round
    # A variant that failed in one round says so next to its rate.
    assert _rate_cell(merge_rounds(rounds[:2]), 3) == "10.0 (10.0-20.0), 2 of 3 rounds"
    results = {
        "machine": {"date": "2026-11-24", "model": "resnet50", "images": 256, "photos": "p",
                    "cores_used": 2, "partitions": 8, "cpu": "cpu", "cpus_on_host": 2,
                    "bf16_cpu": True, "loadavg_at_start": 1.0, "python": "3", "java": "17",
                    "torch": "t", "torchvision": "tv", "pyspark": "4", "pillow": "p",
                    "featurex": "0", "command": "c", "repeats": 2, "rounds": 3, "subset": 16},
        "variants": [{**row, "variant": "featurex", "batch_size": 8, "ratio_to_featurex": 1.0,
                      "max_rel_dev": 1e-7, "min_cosine": 1.0, "unprobed_workers": []}],
    }  # fmt: skip
    assert "| featurex default | 8 | 20.0 (10.0-30.0) | 1.00x | 3 in 2 workers | 1000 | 500 |" in (
        markdown(results)
    )


def test_ceiling_reports_decode_and_forward_costs_per_image(tmp_path: Path) -> None:
    images = [p.read_bytes() for p in sorted(make_images(4, tmp_path, workers=1).iterdir())]
    cost = per_image_ms(images, "fp32", "resnet18", rounds=1)
    # Real timings: decoding a JPEG takes some time, a CNN forward pass takes longer. The
    # command itself runs in the harness test above (its --json figures).
    assert 0 < cost["decode_ms"] < cost["forward_ms"]
    # The engine alone decodes and runs the same model on the same images: it pays the
    # forward pass, and beats the bound by timing noise at most (one round each: on a
    # loaded 2-core machine, 54.5 ms for the forward pass alone against 50.1 for the engine).
    assert cost["engine_ms"] > 0.75 * cost["forward_ms"]
    cmd = [sys.executable, "-m", "benchmarks.ceiling", "--rounds", "0"]
    bad = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "must be positive" in bad.stderr


def test_job_costs_split_into_a_fixed_cost_and_a_cost_per_image() -> None:
    sizes = [64, 128, 256, 512]
    fixed, per_image = fit(sizes, [0.1 + 0.015 * n for n in sizes])
    assert fixed == pytest.approx(0.1) and per_image == pytest.approx(0.015)
    rows = [{"udf": "no-op UDF", "sizes": sizes, "seconds": [0.2, 0.3, 0.4, 0.5],
             "fixed_ms": 100.0, "per_image_ms": 0.5},
            {"udf": "featurex int8", "sizes": sizes, "seconds": [1.0, 2.0, 4.0, 8.0],
             "fixed_ms": 40.0, "per_image_ms": 16.0}]  # fmt: skip
    results = {"machine": {"command": "c", "date": "d", "cpu": "cpu", "cores_used": 2,
                           "model": "resnet50", "precision": "int8", "rounds": 3},
               "ceiling": {"decode_ms": 3.0, "forward_ms": 21.0, "bound_ms_per_image": 12.0},
               "rows": rows}  # fmt: skip
    text = costs_markdown(results)
    assert "12.00 ms of wall time per image on 2 cores (83.3 images/s)" in text
    assert "| featurex int8 | 1.000 | 2.000 | 4.000 | 8.000 | 40 | 16.00 | 62.5 | 75% |" in text
    assert "| no-op UDF | 0.200 | 0.300 | 0.400 | 0.500 | 100 | 0.50 | 2000.0 | - |" in text
    bad = subprocess.run([sys.executable, "-m", "benchmarks.costs", "--sizes", "64,100"],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "multiples of 32" in bad.stderr


def test_resume_benchmark_times_the_real_resume_steps(spark: object, tmp_path: Path) -> None:
    inputs = tiny_jpegs(tmp_path / "in", 30, side=16)
    out = tmp_path / "out"
    assert fabricate(spark, inputs, out, every=10) == 30
    assert len(list((out / "_featurex" / "chunks").glob("*.json"))) == 3
    # It checks that the real listing finds every input done in the fabricated OUT.
    times = resume_phases(spark, inputs, out, every=10)
    assert set(times) == {"list inputs", "read OUT's records", "match", "total"}
    assert len(pq.read_table(out)) == 30


def test_the_gpu_benchmark_runs_every_row_in_its_cpu_smoke_mode(tmp_path: Path) -> None:
    # The same script as on a GPU (worker processes, K at once, peers, three families), on
    # the CPU with tiny models; the GPU path through torchvision's CPU decoder.
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--smoke", "--out", str(out),
           "--data", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu-smoke.json").read_text())
    rows = report["rows"]
    kinds = {(r["what"], r.get("decode"), r["k"]) for r in rows}
    assert {("featurex", "gpu", 2), ("featurex", "cpu", 1), ("peer_dataloader", None, 1)} <= kinds
    assert {r["model"] for r in rows if r["what"] != "agreement"} == {
        "resnet18",
        "clip_b16",
        "dinov2_s",
    }
    agreement = [r for r in rows if r["what"] == "agreement"]
    assert len(agreement) == 2  # both paths' features, fp32: a CNN and a transformer
    for r in agreement:  # the GPU path ran: not the CPU against the CPU
        assert r["same_errors"] and r["min_cosine"] >= 0.9999 and r["gpu_decoded"] == r["rows"], r
    for r in (r for r in rows if r["what"] != "agreement"):
        assert r["images_per_s"] > 0 and r["failed"] == 0 and r["share_of_forward"] > 0, r
        if r["what"] == "featurex":  # every JPEG through the GPU decoder, or none
            assert r["gpu_decoded"] == (report["images"] if r["decode"] == "gpu" else 0), r
    assert "| resnet18 | featurex, decode=gpu | 2 |" in (out / "gpu-smoke.md").read_text()


def test_a_gpu_benchmark_job_that_fails_is_recorded_and_the_next_one_runs(tmp_path: Path) -> None:
    # A GPU machine is lent for minutes: one failing row must not lose the rows after it.
    from benchmarks.gpu import _run_workers, _shares, markdown
    from benchmarks.images import make_images

    folder = make_images(4, tmp_path / "data")
    bad = {"k": 1, "what": "featurex", "model": "no_such_model", "precision": "fp32",
           "batch": 2, "decode": "cpu"}  # fmt: skip
    good = {**bad, "what": "forward", "model": "resnet18"}
    common = {"images": str(folder), "count": 4, "smoke": True, "folders": {}, "cores": 1}
    failed, ran = _run_workers(1, [bad, good], common)
    assert "no_such_model" in failed["error"] and "images_per_s" not in failed
    assert "error" not in ran and ran["images_per_s"] > 0
    _shares([failed, ran])
    machine = {k: "-" for k in ("date", "device", "cpus", "python", "torch", "cuda")}
    report = {"machine": {**machine, "torchvision": "-", "pillow": "-"}, "images": 4,
              "rows": [failed, ran], "seconds": 1}  # fmt: skip
    assert "| no_such_model | featurex, decode=cpu | 1 | fp32 | 2 | failed: " in markdown(report)


@pytest.mark.slow
def test_the_peers_benchmark_runs_featurex_the_row_udf_and_each_installed_peer(
    tmp_path: Path,
) -> None:
    # Every tool in a fresh process tree on the same 12 JPEGs (resnet18, one round); Daft
    # and Ray Data where installed (the `peers` extra), skipped with a note where not.
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmarks.peers", "--smoke", "--out", str(out),
           "--data", str(tmp_path / "data")]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "peers-smoke.json").read_text())
    table = (out / "peers-smoke.md").read_text()
    installed = {p for p in ("daft", "ray") if importlib.util.find_spec(p) is not None}
    for peer in {"daft", "ray"} - installed:
        note = f"{peer}: skipped, {peer} is not installed (pip install -e '.[peers]')"
        assert note in report["skipped"] and note in done.stdout and note in table
    assert report["machine"]["model"] == "resnet18" and report["machine"]["cpu"]
    assert report["machine"]["command"].startswith("python -m benchmarks.peers --smoke")
    [block] = report["sizes"]
    assert block["images"] == 12 and report["failed"] == []
    rows = {r["peer"]: r for r in block["rows"]}
    assert set(rows) == {"featurex", "row_udf"} | installed
    for row in rows.values():
        [run] = row["runs"]
        # Every image finished in units of work (tasks, batches) after the launch, the
        # first before the last, and the Parquet written after both. The steady rate needs
        # 3 units: Spark's 2 tasks of 6 images end together (none), Daft's and Ray's 3
        # batches of 4 one after the other.
        assert run["units"] >= 2, row["peer"]
        steady = row["steady_images_per_s"]
        assert steady > 0 if row["peer"] in ("daft", "ray") else steady is None or steady > 0
        assert 0 < row["first_vector_s"] <= run["last_unit_s"] <= row["wall_s"] <= run["exit_s"]
        assert row["images_per_s"] == pytest.approx(12 / row["wall_s"])
        assert row["cpu_ms_per_image"] > 0 and 100 < row["peak_pss_mb"] < 16_000
        # Each process's own time, sampled: never much below the kernel's account of the
        # reaped tree, which misses the Python workers when pyspark's daemon reaps them.
        assert run["cpu_s"] > 0.9 * run["reaped_cpu_s"], row["peer"]
    # featurex's start-up, in order: the session, the listing, the job, pyspark's daemon,
    # its forked workers, the models they loaded (featurex's INFO log), the first task.
    fx = rows["featurex"]["runs"][0]
    s, workers, loaded = fx["stamps"], fx["workers"], fx["models_loaded_s"]
    assert 0 < s["imported"] < s["session"] < s["listed"] < s["submitted"]
    assert s["submitted"] < workers["daemon_started_s"] < workers["workers_started_s"][0]
    assert 1 <= len(loaded) <= 2 and workers["workers_started_s"][0] < loaded[0]
    assert loaded[0] < fx["first_vector_s"]
    assert "| first task done: the first vectors |" in table
    [boot] = report["startup"]  # the engine's own steps in a plain process
    assert boot["which"] == "fp32" and boot["batch"] >= 1
    assert all(boot["steps"][k] > 0 for k in ("torch", "torchvision", "loaded", "first_batch"))
    # The same function everywhere: against the row UDF (torchvision by hand), featurex
    # exactly, Ray Data through Pillow too, Daft through its own JPEG decoder.
    agree = {a["peer"]: a for a in block["agreement"]}
    assert set(agree) == {"featurex"} | installed
    assert all(a["against"] == "row_udf fp32" and a["images"] == 12 for a in agree.values())
    assert agree["featurex"]["min_cosine"] > 0.99999 and agree["featurex"]["max_rel_dev"] < 1e-4
    for peer in installed:
        assert agree[peer]["min_cosine"] > 0.999, agree[peer]
    line = next(ln for ln in table.splitlines() if ln.startswith("| featurex (`binaryFile`"))
    assert (
        f"| fp32 | {rows['featurex']['images_per_s']:,.2f} | {rows['featurex']['wall_s']:,.1f} |"
        in line
    )
    assert "| seed's row UDF (broadcast model, one image per call, `local[2]`) | fp32 |" in table


def test_the_peers_benchmark_skips_what_it_cannot_run_and_refuses_what_no_tool_runs() -> None:
    rows = [("featurex", "fp32"), ("daft", "fp32"), ("ray", "bf16"), ("featurex", "int8")]
    entries, notes = runnable(rows, ["avx2", "avx512_vnni"], lambda package: package != "ray")
    assert entries == [("featurex", "fp32"), ("daft", "fp32"), ("featurex", "int8")]
    assert notes == ["ray: skipped, ray is not installed (pip install -e '.[peers]')"]
    entries, notes = runnable(rows, ["avx2"], lambda package: True)  # no bf16, no VNNI
    assert entries == [("featurex", "fp32"), ("daft", "fp32")]
    assert notes == ["ray bf16: skipped, this CPU has no fast bf16",
                     "featurex int8: skipped, this CPU has no fast int8"]  # fmt: skip
    args = peers_args(["--sizes", "256,4096", "--rounds", "3,1"])
    assert args.size_list == [256, 4096] and args.round_list == [3, 1]
    assert args.model == "resnet50" and args.batch == 32
    for bad in (["--rows", "daft:int8"], ["--rows", "spark:fp32"], ["--rounds", "1,2,3"]):
        with pytest.raises(SystemExit):
            peers_args(bad)
