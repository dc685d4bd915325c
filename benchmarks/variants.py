"""One benchmark variant in a fresh process: its own SparkSession, Python workers and models.

    python -m benchmarks.variants SPEC.json RESULT.json

runs the variant a spec names (run.py writes the spec) and writes RESULT.json: images/s (the
median of the timed runs, after a warm-up job that loads the model in every Python worker,
so start-up and model loads are excluded, and reported apart), model loads and peak RSS of
the Python workers, and the features of the first `subset` images (to an .npy file).

Every variant computes the same function: `model` with seeded random weights, classifier
removed, Resize(256) -> CenterCrop(224) -> ToTensor -> ImageNet Normalize, one torch thread
per Spark task (Spark sets OMP_NUM_THREADS=spark.task.cpus=1 in its Python workers; the
baselines also call torch.set_num_threads(1) there, as their authors would be told to).
"""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

BASELINES = ("eager", "row_udf", "series_udf", "predict_batch_udf", "predict_batch_udf_bf16")
FEATUREX = (
    "featurex",
    "featurex_bf16",
    "featurex_int8",
    "featurex_fast_decode",
    "featurex_eager_graph",
)
VARIANTS = BASELINES + FEATUREX
SERIES_BATCH = 32  # the plain pandas UDF's forward batch: what a user would pick

LOADS = 0  # model builds (or broadcast unpickles) in this process: the baselines' own counter
_MODELS: dict[tuple[str, int], torch.nn.Module] = {}
_PREPROCESS: list[Callable[[Any], torch.Tensor]] = []


def build_model(name: str, seed: int = 0) -> torch.nn.Module:
    """The baselines' model, by hand: seeded random init, last Linear removed, eval."""
    import torchvision

    global LOADS
    LOADS += 1
    torch.manual_seed(seed)
    net = torchvision.models.get_model(name, weights=None)
    last = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    parent, _, attr = last.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, attr, torch.nn.Identity())
    return net.eval()


def cached_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A naive per-process cache (a module-level dict), as most user code has."""
    if (name, seed) not in _MODELS:
        _MODELS[name, seed] = build_model(name, seed)
    return _MODELS[name, seed]


def one_thread() -> None:
    """One torch thread per Spark task, whatever the environment says."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def preprocess(data: bytes) -> torch.Tensor:
    from PIL import Image

    if not _PREPROCESS:
        from torchvision import transforms as T

        normalize = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        _PREPROCESS.append(T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize]))
    return _PREPROCESS[0](Image.open(io.BytesIO(data)).convert("RGB"))


def forward(model: torch.nn.Module, images: list[bytes], bf16: bool = False) -> np.ndarray:
    """Features by hand; `bf16`: what a knowledgeable user adds on a CPU with bf16, autocast
    and channels_last input (the model is made channels_last by `build_model`'s caller)."""
    batch = torch.stack([preprocess(b) for b in images])
    if bf16:
        batch = batch.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        return model(batch).float().numpy()


class CountedModel:
    """What the seed-style UDF broadcasts: a model whose unpickling counts as a load."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __setstate__(self, state: dict[str, Any]) -> None:
        global LOADS
        LOADS += 1
        self.__dict__.update(state)


def feature_column(
    spark: Any,
    variant: str,
    model: str,
    batch_size: int | None,
    seed: int = 0,
    precision: str = "fp32",
) -> Any:
    """The features Column of a Spark variant, over the `content` column."""
    from pyspark.sql.functions import pandas_udf, udf
    from pyspark.sql.types import ArrayType, FloatType

    out_type = ArrayType(FloatType())
    if model.startswith("hf:"):  # a saved Hugging Face model: featurex, or the peer below
        return hf_column(variant, model, batch_size, precision)
    if variant == "row_udf":  # the seed's workaround: broadcast the model, one image per call
        shared = spark.sparkContext.broadcast(CountedModel(build_model(model, seed)))

        def one(content: bytes) -> list[float]:
            one_thread()
            return forward(shared.value.model, [content])[0].tolist()

        return udf(one, out_type)("content")
    if variant == "series_udf":  # a plain Series -> Series pandas UDF

        def series(contents: pd.Series) -> pd.Series:
            one_thread()
            net, items = cached_model(model, seed), contents.tolist()
            out = [
                forward(net, items[i : i + SERIES_BATCH])
                for i in range(0, len(items), SERIES_BATCH)
            ]
            return pd.Series(list(np.concatenate(out)))

        return pandas_udf(series, out_type)("content")  # type: ignore[call-overload]
    if variant.startswith("predict_batch_udf"):
        from pyspark.ml.functions import predict_batch_udf

        bf16 = variant == "predict_batch_udf_bf16"  # the fair peer of featurex bf16

        def make_predict_fn() -> Callable[[np.ndarray], np.ndarray]:
            one_thread()
            net = build_model(model, seed)
            if bf16:
                net = net.to(memory_format=torch.channels_last)
            return lambda inputs: forward(net, [bytes(b) for b in inputs], bf16)

        return predict_batch_udf(make_predict_fn, return_type=out_type, batch_size=batch_size or 8)(
            "content"
        )
    import featurex as fx

    return fx.image_features(
        "content",
        model=model,
        weights=None,
        seed=seed,
        batch_size=batch_size,
        precision={"featurex_bf16": "bf16", "featurex_int8": "int8"}.get(variant, "fp32"),
        fast_decode=variant == "featurex_fast_decode",
        optimize=False if variant == "featurex_eager_graph" else None,
    )


def hf_column(variant: str, model: str, batch_size: int | None, precision: str) -> Any:
    """featurex, or a hand-written `predict_batch_udf` as a knowledgeable user writes it: the
    repo's AutoImageProcessor and AutoModel, `get_image_features` (else `pooler_output`),
    inference mode, bf16 autocast when asked, one torch thread."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    if variant == "featurex":
        import featurex as fx

        return fx.image_features(
            "content", model=model, weights="DEFAULT", batch_size=batch_size, precision=precision
        )
    assert variant == "predict_batch_udf", variant
    folder = model.removeprefix("hf:")

    def make_predict_fn() -> Callable[[np.ndarray], np.ndarray]:
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModel

        global LOADS
        one_thread()
        LOADS += 1
        processor = AutoImageProcessor.from_pretrained(folder)
        net = AutoModel.from_pretrained(folder).eval()

        def predict(inputs: np.ndarray) -> np.ndarray:
            images = [Image.open(io.BytesIO(bytes(b))).convert("RGB") for b in inputs]
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            bf16 = precision == "bf16"
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                if hasattr(net, "get_image_features"):
                    out = net.get_image_features(pixel_values=pixels)
                else:
                    out = net(pixel_values=pixels)
            out = out if isinstance(out, torch.Tensor) else out.pooler_output
            return out.float().numpy()

        return predict

    out_type = ArrayType(FloatType())
    return predict_batch_udf(make_predict_fn, return_type=out_type, batch_size=batch_size or 8)(
        "content"
    )


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def worker_report(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas: this Python worker's pid, model loads, peak RSS (VmHWM) and torch threads.

    It imports nothing new (featurex or torch only when already loaded), so it changes
    neither the worker's memory nor its counts. The short sleep holds the worker, so the
    probe's concurrent tasks land on every idle worker.
    """
    hwm = _status_kb("VmHWM")
    time.sleep(0.3)
    fx = sys.modules.get("featurex")
    loads = LOADS + (fx.cache_info()["loads"] if fx is not None else 0)
    threads = torch.get_num_threads() if "torch" in sys.modules else None
    row = {"pid": os.getpid(), "loads": loads, "hwm_kb": hwm, "torch_threads": threads}
    for batch in batches:
        yield pd.DataFrame({"report": [json.dumps(row)] * len(batch)})


class WorkerMemory:
    """Samples the RSS of Spark's Python workers from the driver (psutil), in a thread.

    The workers are the children of pyspark's daemon (a child of the JVM, a child of this
    process). Complements the workers' own VmHWM: it sees workers that exit or are missed by
    the probe, the probe sees peaks between samples.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak_kb: dict[int, int] = {}
        # RSS less file-backed and shmem pages (psutil's `shared`): anonymous memory.
        self.peak_anon_kb: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="worker-rss")

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.interval):
            try:
                kids = me.children(recursive=True)
                daemons = {p.pid for p in kids if _is_daemon(p)}
                for p in kids:
                    if p.ppid() in daemons:
                        mem = p.memory_info()
                        rss, anon = mem.rss // 1024, (mem.rss - mem.shared) // 1024
                        self.peak_kb[p.pid] = max(rss, self.peak_kb.get(p.pid, 0))
                        self.peak_anon_kb[p.pid] = max(anon, self.peak_anon_kb.get(p.pid, 0))
            except psutil.Error:  # a worker exited between listing and reading: next round
                continue


def _is_daemon(process: Any) -> bool:
    import psutil

    try:
        if "pyspark.daemon" not in " ".join(process.cmdline()):
            return False
        parent = process.parent()
        return parent is None or "pyspark.daemon" not in " ".join(parent.cmdline())
    except psutil.Error:
        return False


def session(cores: int) -> Any:
    from pyspark.sql import SparkSession

    # Workers run this interpreter and import this checkout (benchmarks.variants included).
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.pop("OMP_NUM_THREADS", None)  # let Spark set it per worker (spark.task.cpus)
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("featurex-benchmark")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def load_images(spark: Any, folder: str, partitions: int) -> tuple[Any, int]:
    """The images as (path, content), in `partitions` equal partitions, cached in memory.

    Cached so the timed runs measure bytes -> features (as eager does), not file reads, and
    equal partitions so both cores work to the end.
    """
    from pyspark import StorageLevel

    files = spark.read.format("binaryFile").load(folder).select("path", "content")
    files = files.repartition(partitions).persist(StorageLevel.MEMORY_AND_DISK)
    return files, files.count()


def timed_runs(frame: Any, column: Any, repeats: int) -> list[float]:
    """Seconds per run: every row's features computed and dropped (Spark's noop sink)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        frame.select(column.alias("f")).write.format("noop").mode("overwrite").save()
        times.append(time.perf_counter() - start)
    return times


def warm_up(frame: Any, column: Any, cores: int) -> float:
    """One small task per core at once: every Python worker starts and loads its model."""
    start = time.perf_counter()
    warm = frame.limit(2 * cores).repartition(cores).select(column.alias("f"))
    warm.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def subset_features(frame: Any, column: Any, count: int) -> np.ndarray:
    """The features of the first `count` images by path, for the deviation check.

    Filtered by path, not `orderBy().limit()` over the UDF: that stops reading a Python
    worker's output early, and Spark then discards the worker (and its model).
    """
    from pyspark.sql.functions import col

    first = [r["path"] for r in frame.select("path").orderBy("path").limit(count).collect()]
    rows = frame.where(col("path").isin(first)).select("path", column.alias("f")).collect()
    features = {r["path"]: r["f"] for r in rows}
    return np.array([features[p] for p in first], dtype=np.float32)


def probe_workers(spark: Any, cores: int, memory: WorkerMemory) -> dict[str, Any]:
    """Model loads, peak RSS and torch threads over all Python workers of this session."""
    tasks = 4 * cores
    rows = spark.range(0, tasks, 1, tasks).mapInPandas(worker_report, "report string").collect()
    per_pid = {r["pid"]: r for r in (json.loads(row["report"]) for row in rows)}
    hwm = max((r["hwm_kb"] for r in per_pid.values()), default=0) / 1024
    sampled = max(memory.peak_kb.values(), default=0) / 1024
    return {
        "model_loads": sum(r["loads"] for r in per_pid.values()),
        "workers": len(per_pid),
        "workers_seen": len(memory.peak_kb),
        "unprobed_workers": sorted(set(memory.peak_kb) - set(per_pid)),
        "worker_torch_threads": sorted({r["torch_threads"] for r in per_pid.values()}, key=str),
        "peak_worker_rss_mb": max(hwm, sampled),
        "peak_worker_anon_mb": max(memory.peak_anon_kb.values(), default=0) / 1024,
        "vmhwm_mb": hwm,
        "sampled_rss_mb": sampled,
    }


def _rate(n: int, times: list[float]) -> float:
    return n / statistics.median(times)


def run_spark(spec: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    cores, variant = spec["cores"], spec["variant"]
    spark = session(cores)
    startup = time.perf_counter() - start
    with WorkerMemory() as memory:
        files, n = load_images(spark, spec["images"], spec["partitions"])
        column = feature_column(
            spark,
            variant,
            spec["model"],
            spec["batch_size"],
            spec["seed"],
            spec.get("precision", "fp32"),
        )
        warmup = warm_up(files, column, cores)
        load = os.getloadavg()[0]
        times = timed_runs(files, column, spec["repeats"])
        load = max(load, os.getloadavg()[0])
        workers = probe_workers(spark, cores, memory)
    subset = subset_features(files, column, spec["subset"])
    spark.stop()
    np.save(spec["subset_out"], subset)
    return {
        "images": n,
        "seconds": times,
        "images_per_s": _rate(n, times),
        "batch_size": spec["batch_size"] or _default_batch(variant),
        "partitions": spec["partitions"],
        "startup_s": startup,
        "warmup_s": warmup,
        "loadavg_1min": load,
        **workers,
    }


def _default_batch(variant: str) -> int | str | None:
    if variant.startswith("featurex"):
        from featurex.models import default_batch_size, resolve_device

        return f"auto ({default_batch_size(resolve_device('auto'))})"
    return SERIES_BATCH if variant == "series_udf" else None


def run_sweep(spec: dict[str, Any]) -> dict[str, Any]:
    """featurex default over several data sizes, then several batch sizes, in one session.

    A frozen CPU graph is compiled for its batch size, so each batch size loads its own
    model: a warm-up job before each point keeps the load out of its timing.
    """
    import featurex as fx

    cores, repeats = spec["cores"], spec["repeats"]
    spark = session(cores)

    def column(batch_size: int | None) -> Any:
        return fx.image_features(
            "content", model=spec["model"], weights=None, seed=spec["seed"], batch_size=batch_size
        )

    sizes, batches = [], []
    with WorkerMemory() as memory:
        for _, folder in spec["sweep_sizes"]:
            files, n = load_images(spark, folder, spec["partitions"])
            if not sizes:
                warm_up(files, column(None), cores)
            times = timed_runs(files, column(None), repeats)
            sizes.append({"images": n, "seconds": times, "images_per_s": _rate(n, times)})
            files.unpersist()
        if spec["sweep_batches"]:
            files, n = load_images(spark, spec["images"], spec["partitions"])
            for batch in spec["sweep_batches"]:
                warm_up(files, column(batch), cores)
                times = timed_runs(files, column(batch), repeats)
                batches.append(
                    {
                        "batch_size": batch,
                        "images": n,
                        "seconds": times,
                        "images_per_s": _rate(n, times),
                    }
                )
        workers = probe_workers(spark, cores, memory)
    spark.stop()
    return {"size_sweep": sizes, "batch_sweep": batches, **workers}


def run_eager(spec: dict[str, Any]) -> dict[str, Any]:
    """The ceiling without Spark: one process, `cores` torch threads, decode then forward.

    The batch size is the fastest of `eager_batches` on the first few images; the timed runs
    then cover all images at that batch size.
    """
    torch.set_num_threads(spec["cores"])
    paths = sorted(Path(spec["images"]).glob("*.jpg"))
    data = [p.read_bytes() for p in paths]
    net = build_model(spec["model"], spec["seed"]).to(memory_format=torch.channels_last)

    def one_pass(items: list[bytes], batch: int) -> float:
        start = time.perf_counter()
        for i in range(0, len(items), batch):
            forward(net, items[i : i + batch])
        return time.perf_counter() - start

    tried = {}
    sample = data[: max(4 * max(spec["eager_batches"]), 32)]
    for batch in spec["eager_batches"]:
        forward(net, data[:batch])  # warm-up: oneDNN picks its kernels for this shape
        tried[batch] = len(sample) / one_pass(sample, batch)
    best = max(tried, key=lambda b: tried[b])
    load = os.getloadavg()[0]
    times = [one_pass(data, best) for _ in range(spec["repeats"])]
    load = max(load, os.getloadavg()[0])
    np.save(spec["subset_out"], forward(net, data[: spec["subset"]]))
    hwm = _status_kb("VmHWM") / 1024
    return {
        "images": len(data),
        "seconds": times,
        "images_per_s": _rate(len(data), times),
        "batch_size": best,
        "tried": tried,
        "threads": spec["cores"],
        "loadavg_1min": load,
        "model_loads": LOADS,
        "workers": 1,
        "peak_worker_rss_mb": hwm,
        "vmhwm_mb": hwm,
    }


def main(argv: list[str] | None = None) -> int:
    spec_path, out_path = (argv if argv is not None else sys.argv[1:])[:2]
    spec = json.loads(Path(spec_path).read_text())
    kind = spec["variant"]
    result = (
        run_eager(spec)
        if kind == "eager"
        else run_sweep(spec)
        if kind == "sweep"
        else run_spark(spec)
    )
    Path(out_path).write_text(json.dumps({"variant": kind, **result}, indent=1))
    return 0


if __name__ == "__main__":
    # Run the imported module, not __main__: the UDFs then pickle by reference and the
    # workers count loads in the same module-level LOADS that worker_report reads.
    from benchmarks.variants import main as imported_main

    sys.exit(imported_main())
