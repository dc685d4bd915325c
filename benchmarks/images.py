"""Benchmark images: distinct, realistic JPEGs cut from real photos. Nothing is downloaded.

The photos are the six in samples/ and, when scikit-image is installed (the `bench` extra),
the photographs bundled inside it (its data folder; scikit-image's own download-on-demand
images are never fetched). Image i is a random crop (50-100% of each side) of one of them,
scaled so its long side is 300-1024 px, maybe mirrored, with a small brightness change, and
saved as an RGB JPEG at quality 75-95. Image i depends only on the seed, i and the photo set,
so the first n images of a bigger set are the n-image set; folders are reused across runs.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
# Photographs among scikit-image's bundled data (not the synthetic, text, texture or tiny ones).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "retina.jpg",
    "rocket.jpg",
)
MIN_SIDE, MAX_SIDE = 300, 1024


def photo_paths() -> list[Path]:
    """The source photos: scikit-image's originals where installed, else the samples/ copies.

    samples/ holds downscaled copies of six scikit-image photos; a photo found in both is
    taken once, from scikit-image (larger).
    """
    photos = {p.stem: p for p in sorted(SAMPLES.iterdir()) if p.suffix in (".jpg", ".png")}
    try:
        import skimage.data
    except ImportError:
        return list(photos.values())
    folder = Path(skimage.data.__file__).parent
    for name in SKIMAGE_PHOTOS:
        if (folder / name).is_file():
            photos[Path(name).stem] = folder / name
    return [photos[k] for k in sorted(photos)]


def photo_set_tag(paths: list[Path]) -> str:
    """A short name for the photo set: cached images are reused only for the same set."""
    names = ",".join(f"{p.name}:{p.stat().st_size}" for p in paths)
    return f"{len(paths)}photos-{hashlib.sha256(names.encode()).hexdigest()[:8]}"


@lru_cache(maxsize=1)
def _photos(paths: tuple[Path, ...]) -> list[Image.Image]:
    """The photos, decoded once per process, as RGB (gray photos become gray RGB JPEGs)."""
    return [ImageOps.exif_transpose(Image.open(path)).convert("RGB") for path in paths]


def make_image(i: int, paths: tuple[Path, ...], seed: int = 0) -> bytes:
    """The JPEG bytes of image i: deterministic for (seed, i, photo set)."""
    rng = np.random.default_rng([seed, i])
    photos = _photos(paths)
    photo = photos[i % len(photos)]
    w, h = photo.size
    cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = photo.crop((x, y, x + cw, y + ch))
    scale = rng.uniform(MIN_SIDE, MAX_SIDE) / max(cw, ch)
    size = (max(MIN_SIDE // 4, round(cw * scale)), max(MIN_SIDE // 4, round(ch * scale)))
    crop = crop.resize(size, Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        crop = ImageOps.mirror(crop)
    crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.85, 1.15))
    buffer = io.BytesIO()
    crop.save(buffer, "JPEG", quality=int(rng.integers(75, 96)))
    return buffer.getvalue()


def _write(job: tuple[int, tuple[Path, ...], int, Path]) -> None:
    i, paths, seed, out = job
    target = out / f"img{i:05d}.jpg"
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(make_image(i, paths, seed))
    os.replace(tmp, target)  # never a half-written JPEG after an interrupted run


def make_images(n: int, root: Path, seed: int = 0, workers: int | None = None) -> Path:
    """A folder holding exactly images 0..n-1 (made once, then reused), under root."""
    paths = tuple(photo_paths())
    out = root / f"{photo_set_tag(paths)}-seed{seed}" / f"n{n}"
    out.mkdir(parents=True, exist_ok=True)
    wanted = {f"img{i:05d}.jpg" for i in range(n)}
    for stale in out.iterdir():
        if stale.name not in wanted:  # leftovers of an interrupted run
            stale.unlink()
    missing = [i for i in range(n) if not (out / f"img{i:05d}.jpg").is_file()]
    missing = [i for i in missing if not _link_from_sibling(out, i)]
    if missing:
        jobs = [(i, paths, seed, out) for i in missing]
        with ProcessPoolExecutor(workers or os.cpu_count() or 1) as pool:
            list(pool.map(_write, jobs, chunksize=16))
    return out


def _link_from_sibling(out: Path, i: int) -> bool:
    """Image i of another size's folder is the same image: link (or copy) it."""
    name = f"img{i:05d}.jpg"
    for sibling in _siblings(out):
        source = sibling / name
        if source.is_file():
            try:
                os.link(source, out / name)
            except OSError:
                shutil.copyfile(source, out / name)
            return True
    return False


def _siblings(out: Path) -> Iterator[Path]:
    return (p for p in out.parent.iterdir() if p.is_dir() and p != out)
