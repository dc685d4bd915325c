"""How far each precision's features are from fp32, on the benchmark's photos.

    python -m benchmarks.accuracy                  # resnet50, 256 images, fp32 vs bf16 and int8
    python -m benchmarks.accuracy --model resnet18 --images 64 --variants bf16,int8,int8+fast_decode

For every variant: the cosine similarity of each image's features to fp32's (min and mean),
and nearest-neighbour agreement: for each image, its 10 nearest neighbours (cosine) among the
others, and how many of fp32's 10 it keeps (mean and min, out of 10). The same figures are
given apart for the images cut from photos that int8's built-in calibration set does not
hold (it holds downscaled copies of the six in samples/). Random init (no weights can be
downloaded here): trained weights have other activation statistics. No Spark: the engine.
Results go to benchmarks/results/accuracy.json and accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.images import make_images, photo_paths
from benchmarks.run import ROOT, machine

K = 10


def neighbours(features: np.ndarray, k: int = K) -> np.ndarray:
    """Each row's k nearest other rows by cosine similarity."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1)[:, :k]


def compare(features: np.ndarray, reference: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    cosine = (features * reference).sum(1) / (
        np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1)
    )
    mine, theirs = neighbours(features[rows]), neighbours(reference[rows])
    kept = np.array([len(set(a) & set(b)) for a, b in zip(mine, theirs, strict=True)])
    return {
        "images": len(rows),
        "min_cosine": float(cosine[rows].min()),
        "mean_cosine": float(cosine[rows].mean()),
        "top10_kept_mean": float(kept.mean()),
        "top10_kept_min": int(kept.min()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--variants", default="bf16,int8,int8+fast_decode")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / ".data")
    args = parser.parse_args(argv)

    import featurex as fx

    folder = make_images(args.images, args.data)
    paths = sorted(folder.glob("*.jpg"))
    images = [p.read_bytes() for p in paths]
    photos = photo_paths()
    calibration = {p.stem for p in (ROOT / "featurex" / "_calibration").glob("*.jpg")}
    # Image i is cut from photos[i % len(photos)] (benchmarks/images.py).
    unseen = np.array(
        [i for i in range(len(images)) if photos[i % len(photos)].stem not in calibration]
    )
    everything = np.arange(len(images))

    def run(precision: str, fast_decode: bool = False) -> np.ndarray:
        extractor = fx.FeatureExtractor(args.model, weights=None, device="cpu",
                                        precision=precision, fast_decode=fast_decode)  # fmt: skip
        features, errors = extractor.extract(images)
        assert not any(errors), errors
        return features

    reference = run("fp32")
    rows = []
    for variant in args.variants.split(","):
        precision, _, option = variant.partition("+")
        features = run(precision, fast_decode=option == "fast_decode")
        rows.append({"variant": variant, "all": compare(features, reference, everything),
                     "unseen_photos": compare(features, reference, unseen)})  # fmt: skip
        print(variant, rows[-1], flush=True)
    command = "python -m benchmarks.accuracy " + shlex.join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {
        "machine": {**machine(1), "command": command, "model": args.model},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps(results, indent=1))
    (args.out / "accuracy.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"# Features against fp32: {m['model']}, random init",
        "",
        f"`{m['command']}` on {m['date']}, {m['cpu']}, torch {m['torch']}. Cosine to fp32 per "
        f"image; top-{K}: of each image's {K} nearest neighbours under fp32, how many it keeps.",
        "",
        "| variant | images | min cosine | mean cosine | top-10 kept (mean) | top-10 kept (min) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        for part, label in (("all", "all"), ("unseen_photos", "photos not in calibration")):
            r = row[part]
            lines.append(
                f"| {row['variant']} | {label} ({r['images']}) | {r['min_cosine']:.5f} "
                f"| {r['mean_cosine']:.5f} | {r['top10_kept_mean']:.2f} | {r['top10_kept_min']} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
