"""How nvJPEG's pixels differ from Pillow's, measured on the CPU.

torchvision creates nvJPEG with its default flags, which upsample 4:2:0 and 4:2:2 chroma by
replication; Pillow's libjpeg-turbo interpolates ("fancy upsampling"). libjpeg-turbo's own
`djpeg -nosmooth` decodes with replication, so it stands in for nvJPEG's pixels here: the same
JPEGs are decoded both ways, and each pair goes through featurex's Pillow path (as lossless
PNGs) to features.

    python -m benchmarks.chroma [--images 64] [--model resnet50]   # needs djpeg
    (apt-get install libjpeg-turbo-progs)

Prints the mean and largest absolute pixel difference (0-255), and the lowest and mean cosine
of the features, per image set: the benchmark JPEGs (crops of real photos, 300 to 1,024 px)
and the test suite's synthetic photos.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def replicated(data: bytes) -> np.ndarray:
    """RGB pixels with chroma upsampled by replication (djpeg -nosmooth)."""
    done = subprocess.run(
        ["djpeg", "-nosmooth", "-ppm"], input=data, capture_output=True, check=True
    )
    return np.asarray(Image.open(io.BytesIO(done.stdout)).convert("RGB"))


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chroma", description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / ".data")
    args = parser.parse_args(argv)
    if shutil.which("djpeg") is None:
        print("djpeg not found: apt-get install libjpeg-turbo-progs", file=sys.stderr)
        return 2
    import featurex as fx
    from benchmarks.images import make_images

    sys.path.insert(0, str(ROOT / "tests"))
    from images import jpeg

    folder = make_images(args.images, args.data)
    sets = {
        "benchmark JPEGs": [p.read_bytes() for p in sorted(Path(folder).glob("*.jpg"))],
        "test photos": [jpeg(300 + 37 * (i % 20), 500 - 11 * (i % 20), seed=i) for i in range(40)],
    }
    engine = fx.FeatureExtractor(args.model, weights=None, device="cpu", batch_size=16)
    print(f"{args.model} (random init, seed 0), Pillow {Image.__version__}, djpeg -nosmooth")
    for name, files in sets.items():
        fancy = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files]
        nearest = [replicated(f) for f in files]
        diffs = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(fancy, nearest, strict=True)]
        a, _ = engine.extract([png(p) for p in fancy])
        b, _ = engine.extract([png(p) for p in nearest])
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        mean, most = np.mean([d.mean() for d in diffs]), max(int(d.max()) for d in diffs)
        print(
            f"{name}: {len(files)} images, pixels differ by {mean:.2f} on average (at most "
            f"{most}), feature cosine min {cos.min():.6f}, mean {cos.mean():.6f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
