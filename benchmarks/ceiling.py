"""What one core can do: featurex's decode and forward costs per image, without Spark.

    python -m benchmarks.ceiling                 # resnet50, the 256 benchmark images
    python -m benchmarks.ceiling --images 64 --precisions fp32

For each precision, on one core (pinned, one torch thread, as in a Spark Python worker):
milliseconds per image for decode + preprocessing (featurex's `prepare`, and the batch's
`normalize`) and for the forward pass (featurex's loaded model at its default batch size, on
the decoded tensors). Their sum
bounds what `--cores` Spark workers can reach, with no Spark, Arrow or thread overhead at all:
`cores * 1000 / (decode + forward)` images/s. Compare it with the featurex rows of
`python -m benchmarks.run`. Beside it, in the same rounds: the engine alone
(`FeatureExtractor.extract_batches` over batches of 64, its decode thread beside the forward
pass on the same core, as in a worker): what featurex loses to the bound before Spark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from benchmarks.images import make_images

ROOT = Path(__file__).resolve().parent.parent


def per_image_ms(images: list[bytes], precision: str, model: str, rounds: int) -> dict[str, float]:
    from featurex.config import ExtractorConfig
    from featurex.decode import normalize, prepare
    from featurex.extractor import FeatureExtractor

    config = ExtractorConfig(model=model, weights=None, device="cpu", precision=precision)  # type: ignore[arg-type]
    engine = FeatureExtractor.from_config(config)
    loaded, batch = engine.loaded, engine.batch_size
    how, _ = engine.decoding(loaded)  # as the engine decodes (fast_decode on for int8)
    decode, forward, whole = [], [], []
    for round_ in range(rounds):
        start = time.perf_counter()
        prepared = [prepare(data, how) for data in images]
        tensors = [t for t, _ in prepared]
        stacked = torch.stack(tensors)  # type: ignore[arg-type]
        if loaded.preprocessing is not None:  # uint8 crops: normalized per batch
            stacked = normalize(stacked, loaded.preprocessing)
        stacked = stacked.contiguous(memory_format=torch.channels_last)
        decode.append((time.perf_counter() - start) * 1e3 / len(images))
        failed = [reason for _, reason in prepared if reason is not None]
        if failed:
            raise ValueError(f"{len(failed)} benchmark images did not decode: {failed[0]}")
        for _ in range(3 if round_ == 0 else 1):  # the graph executor profiles its first runs
            engine._forward(loaded, stacked[:batch])
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            engine._forward(loaded, stacked[i : i + batch])
        forward.append((time.perf_counter() - start) * 1e3 / len(images))
        start = time.perf_counter()
        for _ in engine.extract_batches(images[i : i + 64] for i in range(0, len(images), 64)):
            pass
        whole.append((time.perf_counter() - start) * 1e3 / len(images))
    return {"decode_ms": statistics.median(decode), "forward_ms": statistics.median(forward),
            "engine_ms": statistics.median(whole)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceiling", description=__doc__)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--cores", type=int, default=2, help="cores the bound is for (2)")
    parser.add_argument("--rounds", type=int, default=3, help="passes, the median is kept (3)")
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / ".data")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if min(args.images, args.cores, args.rounds) < 1:
        parser.error("--images, --cores and --rounds must be positive")
    if hasattr(os, "sched_setaffinity"):  # Linux: pin, as Spark's busy workers each hold one
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    folder = make_images(args.images, args.data)
    images = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
    print(f"{args.model}, {len(images)} images, one core, one torch thread")
    figures = {}
    for precision in args.precisions.split(","):
        cost = per_image_ms(images, precision, args.model, args.rounds)
        total = cost["decode_ms"] + cost["forward_ms"]
        figures[precision] = {**cost, "bound_images_per_s": args.cores * 1e3 / total}
        print(
            f"  {precision}: decode {cost['decode_ms']:.1f} ms + forward {cost['forward_ms']:.1f} "
            f"ms per image = {1e3 / total:.1f} images/s per core; {args.cores} cores at most "
            f"{args.cores * 1e3 / total:.1f} images/s; the engine alone {cost['engine_ms']:.1f} "
            f"ms per image ({total / cost['engine_ms']:.0%} of the bound)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"cores": args.cores, "images": len(images), **figures}))


if __name__ == "__main__":
    main()
