"""Transformer families against the peer a knowledgeable user writes, in one run.

    python -m benchmarks.families                       # both models, fp32 and bf16, 3 rounds
    python -m benchmarks.families --models dinov2_s --precisions bf16 --rounds 1 --images 32

Two Hugging Face models with seeded random weights, saved with save_pretrained (nothing is
downloaded): a CLIP with ViT-B/16's vision tower (and CLIP's text tower, which the image
features never run) and a DINOv2-S, each with its repo's image processor. Each is run by
featurex (`fx.image_features("content", model="hf:<folder>", precision=...)`) and by a
hand-written `predict_batch_udf` (benchmarks/variants.py: `hf_column`), every variant in a
fresh process per round, rounds in turns, as `benchmarks.run` does. Deviations compare each
variant's features for the first `--subset` images with transformers run by hand in fp32.
Results go to benchmarks/results/families.json and families.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.images import make_images
from benchmarks.run import ROOT, _took, deviation, machine, merge_rounds, run_child

MODELS = {
    "clip_b16": "CLIP, ViT-B/16 vision tower (86M) + text tower (63M), projection 512",
    "dinov2_s": "DINOv2-S/14 (22M), pooler output 384",
}
VARIANTS = ("featurex", "predict_batch_udf")


def save_model(name: str, folder: Path, seed: int = 0, tiny: bool = False) -> Path:
    """The model's config with seeded random weights, and its processor, as a repo holds them.

    `tiny`: the same architecture and processor class at toy sizes (two layers of 32, 32x32
    inputs), for the benchmarks' smoke modes.
    """
    from transformers import (
        BitImageProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        Dinov2Config,
        Dinov2Model,
    )

    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(seed)
    small = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
             "num_hidden_layers": 2}  # fmt: skip
    toy_processor = {"size": {"shortest_edge": 36}, "crop_size": {"height": 32, "width": 32}}
    if name == "clip_b16" and tiny:
        text = {**small, "vocab_size": 99, "bos_token_id": 0, "eos_token_id": 1}
        config = CLIPConfig(text_config=text, vision_config={**small, "image_size": 32,
                            "patch_size": 8}, projection_dim=16)  # fmt: skip
        CLIPModel(config).save_pretrained(folder)
        CLIPImageProcessor(**toy_processor).save_pretrained(folder)
    elif name == "clip_b16":  # openai/clip-vit-base-patch16's sizes (the configs' defaults)
        vision = {"image_size": 224, "patch_size": 16}
        CLIPModel(CLIPConfig(vision_config=vision, projection_dim=512)).save_pretrained(folder)
        CLIPImageProcessor().save_pretrained(folder)  # shortest edge 224, crop 224, bicubic
    elif tiny:
        Dinov2Model(Dinov2Config(**small, image_size=32, patch_size=8)).save_pretrained(folder)
        BitImageProcessor(**toy_processor).save_pretrained(folder)
    else:  # facebook/dinov2-small's sizes and processor
        config = Dinov2Config(hidden_size=384, num_attention_heads=6, intermediate_size=1536,
                              patch_size=14, image_size=518)  # fmt: skip
        Dinov2Model(config).save_pretrained(folder)
        BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                          resample=3, image_mean=[0.485, 0.456, 0.406],
                          image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)  # fmt: skip
    return folder


def reference(folder: Path, images: list[bytes]) -> np.ndarray:
    """transformers by hand, fp32: the processor, then get_image_features or pooler_output."""
    processor, model = _by_hand(folder)
    with torch.inference_mode():
        return _features(model, _pixels(processor, images)).numpy()


def gflop_per_image(folder: Path, images: list[bytes]) -> float:
    """The forward pass's GFLOP per image, by torch's FLOP counter, with transformers' eager
    attention: the counter has no formula for the CPU's fused attention kernel."""
    from torch.utils.flop_counter import FlopCounterMode

    processor, model = _by_hand(folder, attn_implementation="eager")
    pixels = _pixels(processor, images)
    with torch.inference_mode(), FlopCounterMode(display=False) as flops:
        _features(model, pixels)
    return flops.get_total_flops() / 1e9 / len(images)


def _by_hand(folder: Path, **options: Any) -> tuple[Any, Any]:
    from transformers import AutoImageProcessor, AutoModel

    return AutoImageProcessor.from_pretrained(folder), AutoModel.from_pretrained(
        folder, **options
    ).eval()


def _pixels(processor: Any, images: list[bytes]) -> torch.Tensor:
    import io

    from PIL import Image

    rgb = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    return processor(images=rgb, return_tensors="pt")["pixel_values"]  # type: ignore[no-any-return]


def _features(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=pixels)
    else:
        out = model(pixel_values=pixels)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def one_core(model: str, precision: str, images: list[bytes], runs: int = 5) -> dict[str, float]:
    """featurex in this process on one thread, as each worker runs it: the load it pays once,
    and its forward pass's CPU time per image (median of `runs` batches of real images, in the
    memory format the engine gives the model)."""
    import io

    from PIL import Image

    import featurex as fx
    from featurex.models.runtime import forward

    torch.set_num_threads(1)
    start = time.perf_counter()
    loaded = fx.FeatureExtractor(model, device="cpu", precision=precision).loaded
    load_s = time.perf_counter() - start
    rows = loaded.graph_batch or 4  # featurex's CPU batch size
    pixels = [loaded.transform(Image.open(io.BytesIO(b)).convert("RGB")) for b in images]
    batch = torch.stack((pixels * rows)[:rows]).contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(runs + 2):
        start = time.process_time()
        forward(loaded.module, batch, loaded.autocast_dtype)
        times.append((time.process_time() - start) * 1000 / rows)
    return {"load_s": load_s, "forward_ms": float(np.median(times[2:]))}


def matmul_speed(precision: str) -> float:
    """One core's GFLOP/s on a ViT-B MLP product (788 x 768 by 768 x 3072) by PyTorch's plain
    `linear`: what the forward pass's matrix products reach without a graph's help."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    torch.set_num_threads(1)
    x, weight = torch.randn(788, 768, dtype=dtype), torch.randn(3072, 768, dtype=dtype)
    times = []
    for _ in range(17):
        start = time.perf_counter()
        torch.nn.functional.linear(x, weight)
        times.append(time.perf_counter() - start)
    return 2 * 788 * 768 * 3072 / float(np.median(times[2:])) / 1e9


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.families",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--models", default=",".join(MODELS), help=f"comma-separated: {','.join(MODELS)}")
    add("--precisions", default="fp32,bf16")
    add("--images", type=int, help="images per timed run (96; --quick 16)")
    add("--repeats", type=int, help="timed runs per process, their median (2; --quick 1)")
    add("--rounds", type=int, help="fresh processes per variant, in turns (3; --quick 1)")
    add("--quick", action="store_true", help="a few minutes: 16 images, 1 repeat, 1 round")
    add("--cores", type=int, default=2)
    add(
        "--batch-size",
        type=int,
        default=None,
        help="both variants (featurex: its default; peer: 8)",
    )
    add("--subset", type=int, default=8, help="images compared with transformers (8)")
    add("--timeout", type=float, default=3600)
    add("--out", type=Path, default=ROOT / "benchmarks" / "results")
    add("--data", type=Path, default=ROOT / "benchmarks" / ".data")
    args = parser.parse_args(argv)
    quick = {"images": 16, "repeats": 1, "rounds": 1}
    for key, value in (quick if args.quick else {"images": 96, "repeats": 2, "rounds": 3}).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.model_list = [m for m in args.models.split(",") if m]
    if not set(args.model_list) <= set(MODELS):
        parser.error(f"unknown models in {args.models!r}: choose from {', '.join(MODELS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    images = make_images(args.images, args.data)
    subset = [p.read_bytes() for p in sorted(images.glob("*.jpg"))[: args.subset]]
    precisions = [p for p in args.precisions.split(",") if p]
    entries = [(m, p, v) for m in args.model_list for p in precisions for v in VARIANTS]
    folders = {m: save_model(m, args.data / "models" / m) for m in args.model_list}
    references = {m: reference(folders[m], subset) for m in args.model_list}
    gflop = {m: gflop_per_image(folders[m], subset[:2]) for m in args.model_list}
    peaks = {p: matmul_speed(p) for p in precisions}
    singles = {
        (m, p): {**one_core(f"hf:{folders[m]}", p, subset), "gflop": gflop[m],
                 "matmul_gflops": peaks[p]}
        for m in args.model_list
        for p in precisions
    }  # fmt: skip
    base = {"images": str(images), "repeats": args.repeats, "cores": args.cores,
            "partitions": 4 * args.cores, "subset": args.subset, "seed": 0,
            "batch_size": args.batch_size}  # fmt: skip
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {e: [] for e in entries}
    failed = []
    for round_ in range(args.rounds):
        turn = round_ * len(entries) // args.rounds
        print(f"round {round_ + 1} of {args.rounds}", flush=True)
        for model, precision, variant in entries[turn:] + entries[:turn]:
            name = f"{model}-{precision}-{variant}"
            print(f"  {name} ...", end=" ", flush=True)
            start = time.perf_counter()
            spec = {**base, "variant": variant, "model": f"hf:{folders[model]}",
                    "precision": precision}  # fmt: skip
            try:
                result = run_child(spec, args.timeout, logs / f"{name}-r{round_ + 1}.log")
            except Exception as exc:
                print(f"FAILED ({exc})", flush=True)
                failed.append({"entry": name, "round": round_ + 1, "error": str(exc)})
                continue
            print(f"{result['images_per_s']:.2f} images/s ({_took(start)})", flush=True)
            runs[model, precision, variant].append(result)
    rows = []
    for (model, precision, variant), done in runs.items():
        if not done:
            continue
        row = merge_rounds(done)
        row["max_rel_dev"], row["min_cosine"] = deviation(
            row.pop("subset_features"), references[model]
        )
        load_s = singles[model, precision]["load_s"] if variant == "featurex" else None
        row.update(model=model, precision=precision, variant=variant, load_s=load_s)
        rows.append(row)
    command = "python -m benchmarks.families " + shlex.join(sys.argv[1:] if argv is None else argv)
    info = {**machine(args.cores), "command": command, "images": args.images,
            "rounds": args.rounds, "repeats": args.repeats}  # fmt: skip
    one = [{"model": m, "precision": p, **v} for (m, p), v in singles.items()]
    results = {"machine": info, "rows": rows, "one_core": one, "failed": failed}
    (args.out / "families.json").write_text(json.dumps(results, indent=1, default=float))
    (args.out / "families.md").write_text(markdown(results))
    print(markdown(results), flush=True)
    return 1 if failed else 0


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    lines = [
        "# Transformer families: featurex against a hand-written predict_batch_udf",
        "",
        f"`{info['command']}` on {info['date']}: {info['cpu']} ({info['cores_used']} cores, "
        f"flags {' '.join(info['cpu_flags'])}), torch {info['torch']}, pyspark "
        f"{info['pyspark']}; {info['images']} JPEGs, median of {info['rounds']} rounds "
        f"(range), load average {info['loadavg_at_start']:.1f} at the start.",
        "",
        "| model | precision | variant | images/s | vs peer | peak worker RSS / anon MB "
        "| load s | max dev | min cos |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(r["model"], r["precision"], r["variant"]): r for r in results["rows"]}
    for (model, precision, variant), row in by_key.items():
        peer = by_key.get((model, precision, "predict_batch_udf"))
        ratio = f"{row['images_per_s'] / peer['images_per_s']:.2f}x" if peer else "-"
        rates = row["round_images_per_s"]
        spread = f" ({min(rates):.1f}-{max(rates):.1f})" if len(rates) > 1 else ""
        load = f"{row['load_s']:.1f}" if row["load_s"] is not None else "-"
        lines.append(
            f"| {MODELS[model]} | {precision} | {variant} | {row['images_per_s']:.2f}{spread} "
            f"| {ratio} | {row['peak_worker_rss_mb']:.0f} / {row['peak_worker_anon_mb']:.0f} "
            f"| {load} | {row['max_rel_dev']:.1e} | {row['min_cosine']:.5f} |"
        )
    lines += [
        "",
        "One core: featurex's forward pass as a worker runs it (CPU time per image, its batch "
        "size, median of 5), and the GFLOP/s it reaches (the model's GFLOP per image by torch's "
        "FLOP counter) next to PyTorch's plain `linear` on a ViT-B MLP product on the same core.",
        "",
        "| model | precision | GFLOP/img | forward ms/img | forward GFLOP/s "
        "| plain linear GFLOP/s | forward / linear |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for one in results.get("one_core", []):
        reached = one["gflop"] / one["forward_ms"] * 1e3
        lines.append(
            f"| {MODELS[one['model']]} | {one['precision']} | {one['gflop']:.1f} "
            f"| {one['forward_ms']:.0f} | {reached:.0f} | {one['matmul_gflops']:.0f} "
            f"| {reached / one['matmul_gflops']:.0%} |"
        )
    for failure in results["failed"]:
        lines.append(f"\nFAILED {failure['entry']} (round {failure['round']}): {failure['error']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
