"""The featurex benchmark: every variant on the same images, model and cores, in one run.

    python -m benchmarks.run                      # 256 images, resnet50, sweeps included
    python -m benchmarks.run --quick              # a few minutes: 64 images, small sweeps
    python -m benchmarks.run --images 4096 --model resnet18 --variants featurex,row_udf

Each variant runs in a fresh process (benchmarks/variants.py) so that its start-up, model
loads and worker memory are its own. Results go to benchmarks/results/: results.json,
results.md and results.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.images import make_images
from benchmarks.variants import VARIANTS, build_model, forward

ROOT = Path(__file__).resolve().parent.parent
LABELS = {
    "eager": "eager PyTorch, one process (no Spark)",
    "row_udf": "seed-style broadcast row UDF",
    "series_udf": "Series-to-Series pandas_udf, batch 32",
    "predict_batch_udf": "predict_batch_udf, best batch",
    "featurex": "featurex default",
    "featurex_bf16": "featurex bf16",
    "featurex_fast_decode": "featurex fast_decode",
    "featurex_eager_graph": "featurex, optimize=False (eager graph)",
}


def run_variant(
    variant: str, images: Path, args: argparse.Namespace, batch: int | None, repeats: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "subset.npy"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.variants",
            variant,
            "--images",
            str(images),
            "--model",
            args.model,
            "--repeats",
            str(repeats),
            "--cores",
            str(args.cores),
            "--subset",
            str(args.subset),
            "--subset-out",
            str(subset),
        ]
        if batch is not None:
            cmd += ["--batch-size", str(batch)]
        print(f"  {variant} (batch {batch or 'default'}) on {images.name} ...", flush=True)
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
        if done.returncode != 0:
            raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["subset_features"] = np.load(subset)
    print(f"    {result['images_per_s']:.2f} images/s", flush=True)
    return result


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SPARK_LOCAL_IP="127.0.0.1")
    env.pop("OMP_NUM_THREADS", None)
    return env


def deviation(features: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Max row-relative L2 deviation and min cosine similarity to the reference."""
    norm = np.linalg.norm(reference, axis=1)
    rel = np.linalg.norm(features - reference, axis=1) / np.maximum(norm, 1e-12)
    cos = (features * reference).sum(1) / np.maximum(norm * np.linalg.norm(features, axis=1), 1e-12)
    return float(rel.max()), float(cos.min())


def machine() -> dict[str, Any]:
    import pyspark
    import torch
    import torchvision

    import featurex

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores_used": None,
        "cpus_on_host": os.cpu_count(),
        "bf16_cpu": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pyspark": pyspark.__version__,
        "featurex": featurex.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=256, help="images in the main comparison")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median)")
    parser.add_argument("--cores", type=int, default=2, help="local[N] and eager torch threads")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--pbu-batches", default="4,8,16", help="predict_batch_udf batch sizes")
    parser.add_argument("--sweep-sizes", default="256,1024,4096", help="'' to skip")
    parser.add_argument("--sweep-batches", default="1,4,8,16,32", help="'' to skip")
    parser.add_argument("--subset", type=int, default=16, help="images compared to torchvision")
    parser.add_argument("--quick", action="store_true", help="64 images, 1 repeat, small sweeps")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / ".data")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats = 64, 1
        args.sweep_sizes, args.sweep_batches, args.pbu_batches = "64,128", "4,8,16", "8"
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")

    images = make_images(args.images, args.data / f"n{args.images}")
    paths = sorted(images.glob("*.jpg"))[: args.subset]
    reference = forward(build_model(args.model), [p.read_bytes() for p in paths])
    command = "python -m benchmarks.run " + " ".join(argv or sys.argv[1:])
    info = {
        **machine(),
        "cores_used": args.cores,
        "model": args.model,
        "images": args.images,
        "repeats": args.repeats,
        "command": command,
    }
    print(
        f"featurex benchmark: {args.model}, {args.images} images, local[{args.cores}]", flush=True
    )

    rows: list[dict[str, Any]] = []
    for variant in variants:
        batches = (
            [int(b) for b in args.pbu_batches.split(",")]
            if variant == "predict_batch_udf"
            else [None]
        )
        tried = [run_variant(variant, images, args, b, args.repeats) for b in batches]
        best = max(tried, key=lambda r: r["images_per_s"])
        if len(tried) > 1:
            best["tried"] = {r["batch_size"]: round(r["images_per_s"], 2) for r in tried}
        rows.append(best)
    for row in rows:
        row["max_rel_dev"], row["min_cosine"] = deviation(row.pop("subset_features"), reference)
    base = next((r["images_per_s"] for r in rows if r["variant"] == "featurex"), None)
    for row in rows:
        row["ratio_to_featurex"] = row["images_per_s"] / base if base else None

    sweep_sizes = [int(s) for s in args.sweep_sizes.split(",") if s]
    sweep_batches = [int(b) for b in args.sweep_batches.split(",") if b]
    sizes = _sweep(args, sweep_sizes, [None] * len(sweep_sizes))
    batch_sweep = _sweep(args, [args.images] * len(sweep_batches), sweep_batches)
    results = {"machine": info, "variants": rows, "size_sweep": sizes, "batch_sweep": batch_sweep}
    write_results(results, args.out)
    print((args.out / "results.md").read_text())
    return 0


def _sweep(
    args: argparse.Namespace, sizes: list[int], batches: list[int | None]
) -> list[dict[str, Any]]:
    """featurex default at each (images, batch size), one timed run each."""
    out = []
    for n, batch in zip(sizes, batches, strict=True):
        result = run_variant("featurex", make_images(n, args.data / f"n{n}"), args, batch, 1)
        result.pop("subset_features")
        out.append(result)
    return out


def write_results(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    chart(results, out / "results.png")


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"featurex benchmark, {m['date']}: {m['model']}, {m['images']} JPEGs, "
        f"local[{m['cores_used']}] on {m['cpu']} ({m['cpus_on_host']} CPUs on the host; "
        f"bf16: {m['bf16_cpu']}); median of {m['repeats']} timed runs after a warm-up; "
        f"Python {m['python']}, torch {m['torch']}, pyspark {m['pyspark']}, "
        f"featurex {m['featurex']}.",
        f"Command: `{m['command']}`",
        "",
        "| variant | images/s | vs featurex | model loads | peak worker RSS (MB) "
        "| max deviation | min cosine |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["variants"]:
        label = LABELS[r["variant"]]
        if "tried" in r:
            label += f" ({r['batch_size']}; tried {r['tried']})"
        ratio = f"{r['ratio_to_featurex']:.2f}x" if r["ratio_to_featurex"] else "-"
        lines.append(
            f"| {label} | {r['images_per_s']:.1f} | {ratio} | {r['model_loads']} "
            f"| {r['peak_worker_rss_mb']:.0f} | {r['max_rel_dev']:.1e} | {r['min_cosine']:.5f} |"
        )
    for title, key, field in (
        ("Data size", "size_sweep", "images"),
        ("Batch size", "batch_sweep", "batch_size"),
    ):
        if results[key]:
            lines += [
                "",
                f"{title} sweep (featurex default, one run each):",
                "",
                f"| {field.replace('_', ' ')} | images/s |",
                "|---:|---:|",
            ]
            lines += [f"| {r[field]} | {r['images_per_s']:.1f} |" for r in results[key]]
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["variants"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    names = [LABELS[r["variant"]] for r in rows]
    rates = [r["images_per_s"] for r in rows]
    colors = ["#1f77b4" if r["variant"].startswith("featurex") else "#999999" for r in rows]
    ax.barh(names[::-1], rates[::-1], color=colors[::-1])
    for y, rate in enumerate(rates[::-1]):
        ax.text(rate, y, f" {rate:.1f}", va="center")
    m = results["machine"]
    ax.set_xlabel("images/s (higher is better)")
    ax.set_title(f"{m['model']}, {m['images']} JPEGs, local[{m['cores_used']}], {m['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
