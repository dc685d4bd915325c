"""Benchmark images: distinct, realistic JPEGs cut from the real photos in samples/.

Each image is a random crop (50-100% of each side) of one of the six scikit-image photos
shipped in samples/, scaled so its long side is 300-1024 px, maybe mirrored, and saved at
JPEG quality 75-95. Deterministic for a seed; nothing is downloaded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def make_images(n: int, out: Path, seed: int = 0) -> Path:
    """Write n JPEGs to out/ (reused when already complete) and return out."""
    out.mkdir(parents=True, exist_ok=True)
    if len(list(out.glob("*.jpg"))) == n:
        return out
    photos = [
        ImageOps.exif_transpose(Image.open(p)).convert("RGB") for p in sorted(SAMPLES.iterdir())
    ]
    rng = np.random.default_rng(seed)
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = photo.crop((x, y, x + cw, y + ch))
        scale = rng.uniform(300, 1024) / max(cw, ch)
        crop = crop.resize(
            (max(1, round(cw * scale)), max(1, round(ch * scale))), Image.Resampling.LANCZOS
        )
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        buffer = io.BytesIO()
        crop.save(buffer, "JPEG", quality=int(rng.integers(75, 96)))
        (out / f"img{i:05d}.jpg").write_bytes(buffer.getvalue())
    return out
