"""The featurex benchmark: every variant on the same images, model and cores, in one run.

    python -m benchmarks.run                      # 256 images, resnet50, sweeps included
    python -m benchmarks.run --quick              # a few minutes: 64 images, small sweeps
    python -m benchmarks.run --images 4096 --model resnet18 --variants featurex,row_udf

Each variant runs in a fresh process (benchmarks/variants.py) so that its start-up, model
loads and worker memory are its own; the sweeps run featurex default in one more. Results go
to benchmarks/results/: results.json, results.md and results.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.images import make_images, photo_paths, photo_set_tag
from benchmarks.variants import VARIANTS, build_model, forward

ROOT = Path(__file__).resolve().parent.parent
LABELS = {
    "eager": "eager PyTorch, one process (no Spark)",
    "row_udf": "seed-style broadcast row UDF",
    "series_udf": "Series-to-Series pandas_udf",
    "predict_batch_udf": "predict_batch_udf, best batch",
    "predict_batch_udf_bf16": "predict_batch_udf, bf16 autocast + channels_last, best batch",
    "featurex": "featurex default",
    "featurex_bf16": "featurex bf16",
    "featurex_int8": "featurex int8",
    "featurex_fast_decode": "featurex fast_decode",
    "featurex_eager_graph": "featurex optimize=False (eager graph)",
}
QUICK = {
    "images": 64,
    "repeats": 1,
    "rounds": 1,
    "sweep_sizes": "64,128",
    "sweep_batches": "4,8,16",
    "pbu_batches": "8",
    "eager_batches": "4,8",
}
DEFAULTS = {
    "images": 256,
    "repeats": 2,
    "rounds": 3,
    "sweep_sizes": "256,1024,4096",
    "sweep_batches": "1,4,8,16,32",
    "pbu_batches": "4,8,16",
    "eager_batches": "4,8,16",
}


def run_child(spec: dict[str, Any], timeout: float, log: Path) -> dict[str, Any]:
    """Run one spec in a fresh Python process; its output goes to `log`."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec = {**spec, "subset_out": str(Path(tmp) / "subset.npy")}
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "benchmarks.variants", str(spec_path), str(out_path)]
        with open(log, "w") as stream:
            # A session of its own: on a timeout or ^C, its JVM and Python workers go too.
            child = subprocess.Popen(
                cmd, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT, env=_env(),
                start_new_session=True,
            )  # fmt: skip
            try:
                returncode = child.wait(timeout)
            except BaseException:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                raise
        if returncode != 0:
            tail = log.read_text().strip().splitlines()[-15:] or ["no output"]
            # First line: the child's last words (usually the exception); then its context.
            raise RuntimeError(
                f"{tail[-1]} (exit code {returncode}, log {log})\n" + "\n".join(tail)
            )
        result: dict[str, Any] = json.loads(out_path.read_text())
        if Path(spec["subset_out"]).exists():
            result["subset_features"] = np.load(spec["subset_out"])
    return result


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SPARK_LOCAL_IP="127.0.0.1")
    env.pop("OMP_NUM_THREADS", None)  # Spark sets it per Python worker; eager sets its own
    return env


def deviation(features: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Max row-relative L2 deviation and min cosine similarity to the reference."""
    norm = np.linalg.norm(reference, axis=1)
    rel = np.linalg.norm(features - reference, axis=1) / np.maximum(norm, 1e-12)
    cos = (features * reference).sum(1) / np.maximum(norm * np.linalg.norm(features, axis=1), 1e-12)
    return float(rel.max()), float(cos.min())


def cpu_description() -> tuple[str, list[str]]:
    """The CPU's model name, and the flags that decide its precisions (no torch import)."""
    with open("/proc/cpuinfo") as cpuinfo:
        lines = cpuinfo.read().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    notable = sorted(
        f
        for f in flags
        if f.startswith(("avx512_bf16", "amx", "avx512f", "avx512_vnni"))
        or f in ("avx_vnni", "avx2")
    )
    return cpu or platform.processor(), notable


def machine(cores: int) -> dict[str, Any]:
    import PIL
    import pyspark
    import torch
    import torchvision

    import featurex

    cpu, flags = cpu_description()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_flags": flags,
        "cores_used": cores,
        "cpus_on_host": os.cpu_count(),
        "bf16_cpu": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "loadavg_at_start": os.getloadavg()[0],
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": _java_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pyspark": pyspark.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "featurex": featurex.__version__,
    }


def _java_version() -> str:
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stderr or done.stdout).strip().splitlines()[0] if done.returncode == 0 else "?"


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.replace(" ", "").split(",") if s and s != "none"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--images", type=int, help="images in the main comparison (256; --quick 64)")
    add("--model", default="resnet50", help="a torchvision model name (resnet50)")
    add("--repeats", type=int, help="timed runs per variant process, their median taken (2)")
    add("--rounds", type=int, help="fresh processes per variant, in turns; the median round (3)")
    add("--cores", type=int, default=2, help="local[N], and eager's torch threads (2)")
    add("--variants", default=",".join(VARIANTS), help=f"comma-separated: {','.join(VARIANTS)}")
    add("--pbu-batches", help="predict_batch_udf batch sizes, the best is kept (4,8,16)")
    add("--eager-batches", help="eager batch sizes, the best is kept (4,8,16)")
    add("--sweep-sizes", help="featurex data-size sweep, '' to skip (256,1024,4096)")
    add("--sweep-batches", help="featurex batch-size sweep, '' to skip (1,4,8,16,32)")
    add("--sweep-repeats", type=int, default=1, help="timed runs per sweep point (1)")
    add("--partitions", type=int, help="input partitions, equal sizes (4 x cores)")
    add("--subset", type=int, default=16, help="images compared with torchvision (16)")
    add("--seed", type=int, default=0, help="random-init seed shared by every variant (0)")
    add("--quick", action="store_true", help="a few minutes: 64 images, 1 repeat, small sweeps")
    add("--timeout", type=float, default=3600, help="seconds per variant process (3600)")
    add("--ceiling-images", type=int, default=64,
        help="images for benchmarks.ceiling after the variants, 0 to skip (64)")  # fmt: skip
    add("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    add("--data", type=Path, default=ROOT / "benchmarks" / ".data", help="generated images")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.partitions = args.partitions or 4 * args.cores
    args.variant_list = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(args.variant_list) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
    if not args.variant_list:
        parser.error("--variants names no variant")
    if min(args.images, args.repeats, args.rounds, args.cores) < 1:
        parser.error("--images, --repeats, --rounds and --cores must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    sweep_sizes, sweep_batches = _ints(args.sweep_sizes), _ints(args.sweep_batches)
    print(
        f"featurex benchmark: {args.model}, {args.images} images, local[{args.cores}], "
        f"{args.rounds} round(s) of {args.repeats} timed run(s); logs in {logs}",
        flush=True,
    )
    images = make_images(args.images, args.data, args.seed)
    subset = sorted(images.glob("*.jpg"))[: args.subset]
    reference = forward(build_model(args.model, args.seed), [p.read_bytes() for p in subset])
    base = {
        "images": str(images),
        "model": args.model,
        "repeats": args.repeats,
        "cores": args.cores,
        "partitions": args.partitions,
        "subset": args.subset,
        "seed": args.seed,
        "batch_size": None,
        "eager_batches": _ints(args.eager_batches),
    }
    info = {
        **machine(args.cores),
        "model": args.model,
        "images": args.images,
        "photos": photo_set_tag(photo_paths()),
        "repeats": args.repeats,
        "rounds": args.rounds,
        "partitions": args.partitions,
        "subset": len(subset),
        "command": "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv),
    }

    # Every (variant, batch) runs once per round, each time in a fresh process; the order
    # turns each round, so slow drift of a shared machine does not always hit the same one.
    entries = [
        (variant, batch)
        for variant in args.variant_list
        for batch in (_ints(args.pbu_batches) if variant.startswith("predict_batch") else [None])
    ]
    runs: dict[tuple[str, int | None], list[dict[str, Any]]] = {e: [] for e in entries}
    failed = []
    for round_ in range(args.rounds):
        turn = round_ * len(entries) // args.rounds  # spread the starting points
        if args.rounds > 1:
            print(f"  round {round_ + 1} of {args.rounds}", flush=True)
        for variant, batch in entries[turn:] + entries[:turn]:
            name = f"{variant}-b{batch}" if batch else variant
            print(f"  {name} ...", end=" ", flush=True)
            start = time.perf_counter()
            try:
                spec = {**base, "variant": variant, "batch_size": batch}
                result = run_child(spec, args.timeout, logs / f"{name}-r{round_ + 1}.log")
            except Exception as exc:  # one broken variant must not cost the others
                print(f"FAILED ({exc})", flush=True)
                failure = {"variant": variant, "batch_size": batch, "round": round_ + 1}
                failed.append({**failure, "error": str(exc)})
                continue
            print(f"{result['images_per_s']:.2f} images/s ({_took(start)})", flush=True)
            runs[variant, batch].append(result)
    rows = []
    for variant in args.variant_list:
        tried = [merge_rounds(runs[e]) for e in entries if e[0] == variant and runs[e]]
        if tried:
            best = max(tried, key=lambda r: r["images_per_s"])
            if variant.startswith("predict_batch_udf"):
                best["tried"] = {r["batch_size"]: r["images_per_s"] for r in tried}
            rows.append(best)
    for row in rows:
        row["max_rel_dev"], row["min_cosine"] = deviation(row.pop("subset_features"), reference)
    fx = next((r["images_per_s"] for r in rows if r["variant"] == "featurex"), None)
    for row in rows:
        row["ratio_to_featurex"] = row["images_per_s"] / fx if fx else None

    sweep: dict[str, Any] = {"size_sweep": [], "batch_sweep": []}
    if sweep_sizes or sweep_batches:
        print("  sweeps (featurex default) ...", end=" ", flush=True)
        start = time.perf_counter()
        spec = {
            **base,
            "variant": "sweep",
            "repeats": args.sweep_repeats,
            "sweep_sizes": [[n, str(make_images(n, args.data, args.seed))] for n in sweep_sizes],
            "sweep_batches": sweep_batches,
        }
        try:
            sweep = run_child(spec, args.timeout, logs / "sweep.log")
            print(f"done ({_took(start)})", flush=True)
        except Exception as exc:
            print(f"FAILED ({exc})", flush=True)
            failed.append({"variant": "sweep", "error": str(exc)})
    ceiling = _ceiling(args, rows, logs) if args.ceiling_images else {}
    info["loadavg_at_end"] = os.getloadavg()[0]
    results = {
        "ceiling": ceiling,
        "machine": info,
        "variants": rows,
        "failed": failed,
        "size_sweep": sweep["size_sweep"],
        "batch_sweep": sweep["batch_sweep"],
        "sweep_workers": {k: v for k, v in sweep.items() if not k.endswith("_sweep")},
    }
    write_results(results, args.out)
    print((args.out / "results.md").read_text(), flush=True)
    return 1 if failed else 0


# The precision each featurex variant runs at, for its share of the ceiling.
PRECISION_OF = {"featurex": "fp32", "featurex_bf16": "bf16", "featurex_int8": "int8"}


def _ceiling(args: argparse.Namespace, rows: list[dict[str, Any]], logs: Path) -> dict[str, Any]:
    """benchmarks.ceiling for the precisions of the featurex rows, in this run (after the
    variants, on one pinned core): each row's share of the bound for `--cores` cores."""
    precisions = sorted({PRECISION_OF[r["variant"]] for r in rows if r["variant"] in PRECISION_OF})
    if not precisions:
        return {}
    print("  ceiling ...", end=" ", flush=True)
    start = time.perf_counter()
    try:
        ceiling = run_ceiling(args.model, precisions, args.cores, args.ceiling_images,
                              args.data, logs / "ceiling.log")  # fmt: skip
    except RuntimeError as exc:
        print(f"FAILED ({exc})", flush=True)
        return {}
    print(f"done ({_took(start)})", flush=True)
    for row in rows:
        bound = ceiling.get(PRECISION_OF.get(row["variant"], ""), {}).get("bound_images_per_s")
        if bound:
            row["share_of_ceiling"] = row["images_per_s"] / bound
    return ceiling


def run_ceiling(
    model: str, precisions: list[str], cores: int, images: int, data: Path, log: Path
) -> dict[str, Any]:
    """`python -m benchmarks.ceiling`'s figures, from a child process: it pins itself to one
    core, which a Spark session started from this process would inherit."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ceiling.json"
        cmd = [sys.executable, "-m", "benchmarks.ceiling", "--images", str(images),
               "--model", model, "--precisions", ",".join(precisions), "--rounds", "2",
               "--cores", str(cores), "--data", str(data), "--json", str(out)]  # fmt: skip
        with open(log, "w") as file:
            done = subprocess.run(cmd, cwd=ROOT, stdout=file, stderr=subprocess.STDOUT, env=_env())
        if done.returncode != 0:
            raise RuntimeError(f"benchmarks.ceiling failed: log {log}")
        figures: dict[str, Any] = json.loads(out.read_text())
        return figures


def merge_rounds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from a variant's rounds: the median round (the lower one of an even count),
    so its rate, seconds and start-up agree, and the worst memory and loads of any round."""
    rates = [r["images_per_s"] for r in results]
    row = dict(sorted(results, key=lambda r: r["images_per_s"])[(len(results) - 1) // 2])
    row["round_images_per_s"] = rates
    for key in (
        "peak_worker_rss_mb",
        "peak_worker_anon_mb",
        "vmhwm_mb",
        "sampled_rss_mb",
        "model_loads",
        "workers",
    ):
        if key in row:
            row[key] = max(r[key] for r in results)
    if "unprobed_workers" in row:
        row["unprobed_workers"] = sorted({p for r in results for p in r["unprobed_workers"]})
    return row


def _rate_cell(row: dict[str, Any], rounds: int) -> str:
    """The median, and the range over rounds when there were several."""
    rates = row.get("round_images_per_s") or []
    spread = f" ({min(rates):.1f}-{max(rates):.1f})" if len(rates) > 1 else ""
    short = f", {len(rates)} of {rounds} rounds" if rates and len(rates) < rounds else ""
    return f"{row['images_per_s']:.1f}{spread}{short}"


def _mb(value: float | None) -> str:
    return f"{value:.0f}" if value else "-"


def _took(start: float) -> str:
    return f"{time.perf_counter() - start:.0f} s in all"


def write_results(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable) + "\n")
    (out / "results.md").write_text(markdown(results))
    chart(results, out / "results.png")


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {value!r}")


def _label(row: dict[str, Any]) -> str:
    return LABELS.get(row["variant"], row["variant"])


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"featurex benchmark, {m['date']}: {m['model']} (random init, seed shared), "
        f"{m['images']} JPEGs (300-1024 px, from {m['photos']}), local[{m['cores_used']}] "
        f"with {m['partitions']} equal partitions, on {m['cpu']} ({m['cpus_on_host']} CPUs on "
        f"the host; ISA: {', '.join(m.get('cpu_flags', [])) or 'none of note'}; bf16: "
        f"{m['bf16_cpu']}; load average {m['loadavg_at_start']:.1f} at the "
        f"start, {m.get('loadavg_at_end', float('nan')):.1f} at the end).",
        f"Python {m['python']}, {m['java']}, torch {m['torch']}, torchvision "
        f"{m['torchvision']}, pyspark {m['pyspark']}, Pillow {m['pillow']}, featurex "
        f"{m['featurex']}.",
        "",
        f"Command: `{m['command']}`",
        "",
        f"images/s: the median of {m.get('rounds', 1)} round(s); in a round every variant runs "
        f"in a fresh process (in turns, a different one first each round), after a warm-up "
        f"job that starts every Python worker and loads its model (start-up and warm-up are "
        f"excluded, and shown in the last column), and counts the median of {m['repeats']} "
        "timed run(s). Peak worker memory: the largest over rounds and workers, RSS (VmHWM and "
        "sampled) and anonymous (sampled RSS less file-backed and shared-memory pages: the "
        "shared libraries every worker maps are out; copy-on-write pages from pyspark's "
        "daemon are in). Deviation: against eager torchvision fp32 on the first "
        f"{m['subset']} images (max row-relative L2, min cosine).",
        "",
        "| variant | batch | images/s (range) | vs featurex | model loads | peak worker RSS (MB) "
        "| peak anonymous (MB) | max deviation | min cosine | excluded: start-up + warm-up (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["variants"]:
        ratio = f"{r['ratio_to_featurex']:.2f}x" if r.get("ratio_to_featurex") else "-"
        batch = r.get("batch_size") or "-"
        if "tried" in r:
            batch = f"{batch} (of {', '.join(map(str, r['tried']))})"
        excluded = f"{r['startup_s']:.0f} + {r['warmup_s']:.0f}" if "startup_s" in r else "-"
        loads = f"{r['model_loads']} in {r['workers']} worker{'s' * (r['workers'] != 1)}"
        if r.get("unprobed_workers"):  # seen by the sampler, gone before the probe
            loads += f" (+{len(r['unprobed_workers'])} unprobed)"
        lines.append(
            f"| {_label(r)} | {batch} | {_rate_cell(r, m.get('rounds', 1))} | {ratio} | {loads} "
            f"| {r['peak_worker_rss_mb']:.0f} | {_mb(r.get('peak_worker_anon_mb'))} "
            f"| {r['max_rel_dev']:.1e} | {r['min_cosine']:.5f} "
            f"| {excluded} |"
        )
    for f in results.get("failed", []):
        reason = f["error"].splitlines()[0]
        where = f" in round {f['round']}" if "round" in f else ""
        lines.append(f"| {_label(f)} | {f.get('batch_size') or '-'} | failed{where}: {reason} |")
    ceiling = results.get("ceiling") or {}
    if ceiling:
        lines += [
            "",
            f"Ceiling (`benchmarks.ceiling`, this run, {ceiling['images']} images, one pinned "
            f"core, one torch thread: featurex's own decode and forward without Spark; the "
            f"bound is {ceiling['cores']} cores / (decode + forward); the engine alone is "
            f"featurex's `extract_batches` on that core, its decode thread beside the forward "
            f"pass, as in a worker: what is lost before Spark):",
            "",
            "| precision | decode ms/image | forward ms/image | bound images/s | featurex "
            "images/s | share of the bound | engine alone ms/image (share) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        shares = {PRECISION_OF[r["variant"]]: r for r in results["variants"]
                  if r["variant"] in PRECISION_OF}  # fmt: skip
        for precision, c in ceiling.items():
            if not isinstance(c, dict):
                continue
            row = shares.get(precision)
            got = f"{row['images_per_s']:.1f} | {row['share_of_ceiling']:.0%}" if row else "- | -"
            total = c["decode_ms"] + c["forward_ms"]
            engine = "-"  # results from before the engine was timed
            if "engine_ms" in c:
                engine = f"{c['engine_ms']:.1f} ({total / c['engine_ms']:.0%})"
            lines.append(
                f"| {precision} | {c['decode_ms']:.1f} | {c['forward_ms']:.1f} "
                f"| {c['bound_images_per_s']:.1f} | {got} | {engine} |"
            )
    for title, key, field in (
        ("Data-size sweep", "size_sweep", "images"),
        ("Batch-size sweep", "batch_sweep", "batch_size"),
    ):
        rows = results.get(key) or []
        if rows:
            first = rows[0]["images_per_s"]
            lines += [
                "",
                f"{title} (featurex default, one warm session, median of "
                f"{len(rows[0]['seconds'])} run(s) each):",
                "",
                f"| {field.replace('_', ' ')} | images/s | vs first |",
                "|---:|---:|---:|",
            ]
            lines += [
                f"| {r[field]} | {r['images_per_s']:.1f} | {r['images_per_s'] / first:.2f}x |"
                for r in rows
            ]
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    """The variants' images/s as bars (featurex blue), and the sweeps below when present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["variants"]
    sweeps = [k for k in ("size_sweep", "batch_sweep") if results.get(k)]
    top = 0.45 * max(len(rows), 1) + 1.2
    fig = plt.figure(figsize=(9, top + (2.8 if sweeps else 0)), layout="constrained")
    parts = fig.subfigures(2, 1, height_ratios=[top, 2.8]) if sweeps else [fig]
    ax = parts[0].subplots()
    names = [_label(r) for r in rows][::-1]
    rates = [r["images_per_s"] for r in rows][::-1]
    colors = ["#1f77b4" if n.startswith("featurex") else "#999999" for n in names]
    ax.barh(names, rates, color=colors)
    for y, row in enumerate(rows[::-1]):
        ratio = row.get("ratio_to_featurex")
        note = f" {row['images_per_s']:.1f}" + (f" ({ratio:.2f}x)" if ratio else "")
        ax.text(row["images_per_s"], y, note, va="center", fontsize=9)
    m = results["machine"]
    ax.set_xlabel("images/s (higher is better; in brackets: vs featurex default)")
    ax.set_xlim(0, max(rates, default=1) * 1.3)
    title = f"{m['model']}, {m['images']} JPEGs, local[{m['cores_used']}], {m['cpu']}"
    ax.set_title(f"{title}, {m['date'][:10]}", fontsize=10)
    if sweeps:
        for sub, key in zip(
            parts[1].subplots(1, len(sweeps), squeeze=False)[0], sweeps, strict=True
        ):
            field = "images" if key == "size_sweep" else "batch_size"
            points = results[key]
            labels = [str(r[field]) for r in points]
            sub.bar(labels, [r["images_per_s"] for r in points], color="#1f77b4")
            sub.set_xlabel("images" if key == "size_sweep" else "batch size")
            sub.set_ylabel("images/s")
            name = "data-size" if key == "size_sweep" else "batch-size"
            sub.set_title(f"featurex default: {name} sweep", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
