"""featurex on one GPU, without Spark: the forward pass alone, featurex with decode="cpu" and
decode="gpu" in one process and in K processes sharing the GPU (as K Spark tasks would), and
three peers, in one run.

    PYTHONPATH=. python -m benchmarks.gpu                 # one GPU machine, about 4 minutes
    PYTHONPATH=. python -m benchmarks.gpu --quick         # a first look: 512 images, K <= 4
    PYTHONPATH=. python -m benchmarks.gpu --smoke         # the CPU, seconds (the test suite)

Needs torch, torchvision, transformers, Pillow, pandas, pyarrow; no pyspark, no Java, no
network. Models have random weights (ResNet-50 from torchvision; CLIP ViT-B/16 and DINOv2-S
from transformers, saved with save_pretrained and loaded through `hf:<folder>`); the images
are the benchmark JPEGs (`benchmarks.images`, 300 to 1,024 px).

Every row runs in worker processes that load their model and images first, then start
together: images/s is the rows of all workers over the wall time from that start to the last
worker's end. A featurex worker is a Spark task: `FeatureExtractor.extract_batches` over
Arrow-sized batches of 256, with OMP_NUM_THREADS set to the cores divided by K, as Spark sets
it to spark.task.cpus. Each row gives its share of the forward pass alone (the same model,
precision and batch size, the batch already on the GPU) and the peak GPU memory of its
busiest worker. The smoke mode runs the same code on the CPU with tiny models, the GPU path
through torchvision's CPU decoder, so that this script cannot rot between GPU runs.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ARROW_BATCH = 256  # Spark's Arrow batch as featurex's CLI sets it (maxRecordsPerBatch)


# ------------------------------------------------------------------ the plan


def plan(smoke: bool, quick: bool = False) -> list[dict[str, Any]]:
    """The rows, grouped by K: one set of K workers runs every job of its K in turn."""
    r50 = "resnet18" if smoke else "resnet50"
    b = 8 if smoke else 64  # the GPU's default batch; a CPU graph is compiled for its batch
    half = "fp32" if smoke else "fp16"  # autocast fp16 has no CPU kernels for convolutions
    big = [] if smoke or quick else [256]
    ks = [1, 2] if smoke else [1, 2, 4] if quick else [1, 2, 4, 8]
    loaders = [2] if smoke else [15] if quick else [8, 15]
    rows: list[dict[str, Any]] = []

    def row(
        k: int, what: str, model: str = r50, precision: str = half, batch: int = b, **extra: Any
    ) -> None:
        rows.append(
            {"k": k, "what": what, "model": model, "precision": precision, "batch": batch, **extra}
        )

    for batch in [b, *big]:
        row(1, "forward", batch=batch)
    for k in ks:
        for decode in ("gpu", "cpu") if k == 1 or not smoke else ("gpu",):
            row(k, "featurex", decode=decode)
    for batch in big:
        row(1, "featurex", decode="gpu", batch=batch)
    if not (smoke or quick):  # 16 tasks of one core: what K=4's 4 cores are held against
        row(16, "featurex", decode="cpu")
    row(1, "peer_row", precision="fp32", batch=1)
    row(1, "peer_predict_batch")
    for workers in loaders:
        row(1, "peer_dataloader", workers=workers)
    # Features of decode="gpu" against decode="cpu", fp32, per family (not a speed row).
    # The smoke mode keeps two: tests/test_gpu_path.py checks every family's on the CPU.
    families = ["resnet18", "clip_b16"] if smoke else [
        "resnet50", "timm:vit_small_patch16_224", "open_clip:ViT-B-32", "clip_b16", "dinov2_s"
    ]  # fmt: skip
    for model in families:
        row(1, "agreement", model=model, precision="fp32", batch=b)
    for model in ("clip_b16", "dinov2_s"):
        precision = "fp32" if smoke else "bf16"
        row(1, "forward", model=model, precision=precision)
        for decode in ("gpu", "cpu"):
            row(1, "featurex", model=model, precision=precision, decode=decode)
    return rows


# ------------------------------------------------------------------ the parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="the CPU, tiny models, seconds")
    parser.add_argument("--quick", action="store_true", help="a first look: 512 images, K <= 4")
    parser.add_argument("--images", type=int, help="benchmark JPEGs (2048; quick: 512; smoke: 16)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / ".data")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(json.loads(args.worker))
    count = args.images or (16 if args.smoke else 512 if args.quick else 2048)
    started = time.perf_counter()
    from benchmarks.families import save_model
    from benchmarks.images import make_images

    images = make_images(count, args.data)
    machine = _machine(args.smoke)
    print(f"{machine['device']}; nvJPEG: {machine.get('nvjpeg')}", flush=True)
    results: list[dict[str, Any]] = []

    def write() -> str:
        """The report so far: a run cut short by a time limit keeps what it measured."""
        _shares(results)
        report = {"machine": machine, "images": count, "rows": results,
                  "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
        name = "gpu-smoke" if args.smoke else "gpu-quick" if args.quick else "gpu"
        (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        text = markdown(report)
        (args.out / f"{name}.md").write_text(text)
        return text

    with tempfile.TemporaryDirectory(prefix="featurex-gpu-bench-") as tmp:
        folders = {m: str(save_model(m, Path(tmp) / m, tiny=args.smoke)) for m in MODELS}
        rows = plan(args.smoke, args.quick)
        for k in sorted({r["k"] for r in rows}):
            jobs = [r for r in rows if r["k"] == k]
            common = {
                "images": str(images),
                "count": count,
                "smoke": args.smoke,
                "folders": folders,
                "cores": os.cpu_count() or 1,
            }
            try:
                results += _run_workers(k, jobs, common)
            except Exception as exc:  # a worker died: the other Ks still run
                results += [{**job, "error": f"K={k}: {exc}"} for job in jobs]
            write()
            print(
                f"K={k}: {len(jobs)} rows done, {time.perf_counter() - started:.0f} s", flush=True
            )
    print(write())
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"failed: {_label(r)}, {r['model']}, K={r['k']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def _run_workers(
    k: int, jobs: list[dict[str, Any]], common: dict[str, Any]
) -> list[dict[str, Any]]:
    """K worker processes run `jobs` in turn, each job started in all of them at once."""
    cores = max(1, common["cores"] // k)
    env = dict(os.environ, OMP_NUM_THREADS=str(cores), PYTHONPATH=str(ROOT))
    procs = []
    for index in range(k):
        spec = {**common, "index": index, "k": k, "jobs": jobs}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.gpu", "--worker", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
        )
    results = []
    try:
        for job in jobs:
            for proc in procs:  # each worker loads the job's model and images, then waits
                _expect(proc, "ready")
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            done = [_expect(proc, "done") for proc in procs]
            errors = [d["error"] for d in done if "error" in d]
            if errors:
                results.append({**job, "error": errors[0]})
                continue
            wall = max(d["end"] for d in done) - min(d["start"] for d in done)
            rows = sum(d["rows"] for d in done)
            results.append(
                {
                    **job,
                    "cores_per_worker": cores,
                    "images_per_s": rows / wall,
                    "rows": rows,
                    "wall_s": wall,
                    "gpu_peak_mib": max(d["gpu_peak_mib"] for d in done),
                    "gpu_decoded": sum(d.get("gpu_decoded", 0) for d in done),
                    "failed": sum(d.get("failed", 0) for d in done),
                    **{
                        k: done[0][k]
                        for k in ("min_cosine", "mean_cosine", "same_errors", "skipped")
                        if k in done[0]
                    },
                }
            )
    finally:
        for proc in procs:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=120)
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a worker failed (K={k}): exit codes {[p.returncode for p in procs]}")
    return results


def _expect(proc: subprocess.Popen[str], state: str) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            message: dict[str, Any] = json.loads(line)
            if message.get("state") == state:
                return message
    raise RuntimeError(f"a worker exited before '{state}' (exit code {proc.wait()})")


def _shares(rows: list[dict[str, Any]]) -> None:
    """Each row's images/s as a share of the forward pass alone of its model at its batch
    size, or, for a batch size the forward row did not run (the peers'), at the smallest."""
    rows = [r for r in rows if "error" not in r]
    forward = {(r["model"], r["batch"]): r for r in rows if r["what"] == "forward"}
    rows = [r for r in rows if r["what"] != "agreement"]
    smallest: dict[str, dict[str, Any]] = {}
    for (model, _), r in sorted(forward.items(), key=lambda item: -item[0][1]):
        smallest[model] = r
    for r in rows:
        ref = forward.get((r["model"], r["batch"])) or smallest.get(r["model"])
        r["share_of_forward"] = r["images_per_s"] / ref["images_per_s"] if ref else None


# ------------------------------------------------------------------ a worker


def _worker(spec: dict[str, Any]) -> int:
    import torch

    device = torch.device("cpu" if spec["smoke"] else "cuda")
    cuda = device.type == "cuda"
    for job in spec["jobs"]:  # a job that fails says why, and the next one runs
        error: str | None = None
        try:
            images = _my_images(spec)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            run = _prepare(job, spec, images, device)
            run(warm_up=True)
            if cuda:
                torch.cuda.synchronize(device)
        except Exception as exc:
            error = _failed(exc)
        _say({"state": "ready"})
        if sys.stdin.readline().strip() != "go":
            return 1
        if error is not None:
            _say({"state": "done", "error": error})
            continue
        try:
            start = time.time()
            extra = run(warm_up=False)
            if cuda:
                torch.cuda.synchronize(device)
            end = time.time()
        except Exception as exc:
            _say({"state": "done", "error": _failed(exc)})
            continue
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else 0.0
        _say({"state": "done", "start": start, "end": end, "gpu_peak_mib": round(peak, 1), **extra})
        del run
        if cuda:
            torch.cuda.empty_cache()
    return 0


def _failed(exc: BaseException) -> str:
    import traceback

    traceback.print_exc(file=sys.stderr)  # the whole trace in the log, one line in the report
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def _my_images(spec: dict[str, Any]) -> list[bytes]:
    """This worker's share of the images: a Spark task's partition."""
    files = sorted(Path(spec["images"]).glob("*.jpg"))[: spec["count"]]
    return [f.read_bytes() for f in files[spec["index"] :: spec["k"]]]


def _prepare(job: dict[str, Any], spec: dict[str, Any], images: list[bytes], device: Any) -> Any:
    """A function that runs the job once (warm_up: a short pass) and returns its counts."""
    what = job["what"]
    if what == "featurex":
        return _featurex(job, spec, images, device)
    if what == "agreement":
        return _agreement(job, spec, images, device)
    if what == "forward":
        return _forward_alone(job, spec, images, device)
    return _peer(job, spec, images, device)


def _model_name(job: dict[str, Any], spec: dict[str, Any]) -> str:
    model = job["model"]
    return f"hf:{spec['folders'][model]}" if model in MODELS else model


def _featurex(job: dict[str, Any], spec: dict[str, Any], images: list[bytes], device: Any) -> Any:
    import featurex as fx
    from featurex.decode import gpu as gpu_decode

    decode = job["decode"]
    options = {
        "batch_size": job["batch"],
        "precision": job["precision"],
        "device": device.type,
        "decode": decode,
    }
    if spec["smoke"]:  # the GPU path on the CPU: torchvision's CPU decoder, the same code
        options["decode"] = "auto" if decode == "gpu" else "cpu"
    engine = fx.FeatureExtractor(_model_name(job, spec), weights=None, **options)
    if spec["smoke"] and decode == "gpu":
        engine._decoder_device = device
    _ = engine.loaded

    def run(warm_up: bool) -> dict[str, Any]:
        items = images[: 2 * job["batch"]] if warm_up else images
        before = gpu_decode.STATS["decoded"]
        failed = 0
        batches = (items[i : i + ARROW_BATCH] for i in range(0, len(items), ARROW_BATCH))
        for _, errors in engine.extract_batches(batches):
            failed += sum(e is not None for e in errors)
        return {
            "rows": len(items),
            "failed": failed,
            "gpu_decoded": gpu_decode.STATS["decoded"] - before,
        }

    return run


def _agreement(job: dict[str, Any], spec: dict[str, Any], images: list[bytes], device: Any) -> Any:
    """The GPU path's features against the Pillow path's, on the same device: the cosine of
    each image's pair (a family whose library is missing here is skipped)."""
    import importlib.util

    import numpy as np

    import featurex as fx
    from featurex.decode import gpu as gpu_decode

    library = {"timm": "timm", "open_clip": "open_clip"}.get(job["model"].split(":")[0])
    if library and importlib.util.find_spec(library) is None:
        return lambda warm_up: {"rows": 0, "skipped": f"{library} is not installed"}
    name = _model_name(job, spec)
    options = {"weights": None, "device": device.type, "batch_size": job["batch"]}
    pillow = fx.FeatureExtractor(name, **options, decode="cpu")
    gpu = fx.FeatureExtractor(name, **options, decode="auto" if spec["smoke"] else "gpu")
    if spec["smoke"]:
        gpu._decoder_device = device
    sample = images[: 8 if spec["smoke"] else 128]

    def run(warm_up: bool) -> dict[str, Any]:
        if warm_up:
            return {"rows": 0}
        a, errors_a = pillow.extract(sample)
        before = gpu_decode.STATS["decoded"]
        b, errors_b = gpu.extract(sample)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        return {"rows": len(sample), "min_cosine": float(cos.min()),
                "mean_cosine": float(cos.mean()), "same_errors": errors_a == errors_b,
                "gpu_decoded": gpu_decode.STATS["decoded"] - before}  # fmt: skip

    return run


def _forward_alone(
    job: dict[str, Any], spec: dict[str, Any], images: list[bytes], device: Any
) -> Any:
    import torch

    import featurex as fx
    from featurex.models import forward

    engine = fx.FeatureExtractor(
        _model_name(job, spec),
        weights=None,
        device=device.type,
        precision=job["precision"],
        batch_size=job["batch"],
    )
    loaded = engine.loaded
    tensors = []
    for data in images[: job["batch"]] * (1 + job["batch"] // max(1, len(images))):
        tensors.append(engine_input(loaded, data))
    batch = torch.stack(tensors[: job["batch"]]).to(device)
    batch = batch.contiguous(memory_format=torch.channels_last)
    repeats = 2 if spec["smoke"] else max(8, 4096 // job["batch"])

    def run(warm_up: bool) -> dict[str, Any]:
        n = 2 if warm_up else repeats
        for _ in range(n):
            forward(loaded.module, batch, loaded.autocast_dtype)
        return {"rows": n * batch.shape[0]}

    return run


def engine_input(loaded: Any, data: bytes) -> Any:
    """One image as the model's input (float CHW), through the model's own transform."""
    from PIL import Image

    return loaded.transform(Image.open(io.BytesIO(data)).convert("RGB"))


def _peer(job: dict[str, Any], spec: dict[str, Any], images: list[bytes], device: Any) -> Any:
    """The ways people feed a GPU from a Python function, written as their authors would."""
    import torch
    import torchvision

    from featurex.models.base import default_transform

    torch.manual_seed(0)
    model = torchvision.models.get_model(job["model"], weights=None)
    model.fc = torch.nn.Identity()
    model = model.eval().to(device)
    transform = default_transform()  # Resize(256), CenterCrop(224), ImageNet Normalize
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(job["precision"])
    amp = dtype is not None and device.type == "cuda"

    def infer(batch: Any) -> Any:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=amp):
            return model(batch.to(device, non_blocking=True)).float().cpu()

    def decoded(data: bytes) -> Any:
        from PIL import Image

        return transform(Image.open(io.BytesIO(data)).convert("RGB"))

    what, batch_size = job["what"], job["batch"]
    cap = {"peer_row": 256, "peer_predict_batch": 1024}.get(what, len(images))

    def run(warm_up: bool) -> dict[str, Any]:
        items = images[: 2 * batch_size] if warm_up else images[:cap]
        if what == "peer_row":  # the seed's way: one image per forward pass
            for data in items:
                infer(decoded(data)[None])
        elif what == "peer_predict_batch":  # predict_batch_udf: decode a batch serially
            for i in range(0, len(items), batch_size):
                infer(torch.stack([decoded(d) for d in items[i : i + batch_size]]))
        else:  # a torch DataLoader: decoding in worker processes, pinned batches
            loader = torch.utils.data.DataLoader(
                _Decoded(items, transform),
                batch_size=batch_size,
                num_workers=job["workers"],
                pin_memory=device.type == "cuda",
            )
            for batch in loader:
                infer(batch)
        return {"rows": len(items)}

    return run


class _Decoded:
    """A Dataset of encoded images, decoded and transformed when indexed (in the workers)."""

    def __init__(self, images: list[bytes], transform: Any) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        return self.transform(Image.open(io.BytesIO(self.images[i])).convert("RGB"))


# ------------------------------------------------------------------ models, machine, report

MODELS = {
    "clip_b16": "CLIP ViT-B/16 (hf:, random init, save_pretrained)",
    "dinov2_s": "DINOv2-S/14 (hf:, random init, save_pretrained)",
}


def _machine(smoke: bool) -> dict[str, Any]:
    import PIL
    import torch
    import torchvision

    import featurex

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": "cpu (smoke)" if smoke else torch.cuda.get_device_name(0),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "featurex": featurex.__version__,
    }
    if not smoke:
        from featurex.decode.gpu import nvjpeg_backend

        info["nvjpeg"] = nvjpeg_backend()
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["driver"] = done.stdout.strip().splitlines()[0] if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        info["driver"] = None
    return info


def _label(r: dict[str, Any]) -> str:
    what = {
        "forward": "forward pass alone (batch on the GPU)",
        "featurex": f"featurex, decode={r.get('decode')}",
        "peer_row": "peer: one image per forward (the seed's way)",
        "peer_predict_batch": "peer: predict_batch_udf-style (serial decode)",
        "peer_dataloader": f"peer: DataLoader, {r.get('workers')} workers, pinned",
        "agreement": "features of decode=gpu against decode=cpu",
    }[r["what"]]
    return what


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# featurex on one GPU ({m['date']})",
        "",
        f"`PYTHONPATH=. python -m benchmarks.gpu` on {m['device']} (driver {m.get('driver')}, "
        f"nvJPEG backend: {m.get('nvjpeg')}), "
        f"{m['cpus']} CPU cores; Python {m['python']}, torch {m['torch']} (CUDA {m['cuda']}), "
        f"torchvision {m['torchvision']}, transformers {m.get('transformers')}, Pillow "
        f"{m['pillow']}. {report['images']} benchmark JPEGs; Arrow batches of {ARROW_BATCH}; "
        f"K worker processes share the GPU, each with OMP_NUM_THREADS = cores / K. "
        f"{report['seconds']} s in all.",
        "",
        "| model | what | K | precision | batch | images/s | share of forward | peak GPU MiB "
        "(per worker) | GPU-decoded |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        if r["what"] == "agreement":
            continue
        if "error" in r:
            lines.append(f"| {r['model']} | {_label(r)} | {r['k']} | {r['precision']} | "
                         f"{r['batch']} | failed: {r['error']} | | | |")  # fmt: skip
            continue
        share = "" if r["share_of_forward"] is None else f"{100 * r['share_of_forward']:.0f}%"
        decoded = str(r["gpu_decoded"]) if r["what"] == "featurex" else ""
        lines.append(
            f"| {r['model']} | {_label(r)} | {r['k']} | {r['precision']} | {r['batch']} | "
            f"{r['images_per_s']:,.0f} | {share} | {r['gpu_peak_mib']:,.0f} | {decoded} |"
        )
    lines += [
        "",
        "Features of the GPU path against the Pillow path, fp32, on the same device, per image:",
        "",
        "| model | images | decoded by nvJPEG | min cosine | mean cosine | same verdicts |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        if r["what"] != "agreement":
            continue
        if "skipped" in r or "error" in r:
            why = r.get("skipped") or f"failed: {r['error']}"
            lines.append(f"| {r['model']} | - | - | - | - | {why} |")
        else:
            lines.append(f"| {r['model']} | {r['rows']} | {r['gpu_decoded']} | "
                         f"{r['min_cosine']:.6f} | {r['mean_cosine']:.6f} | "
                         f"{r['same_errors']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
