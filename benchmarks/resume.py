"""What resuming and chunking cost: `featurex extract --resume` against the inputs already
done, and the fixed cost of one more chunk.

    python -m benchmarks.resume                          # 1,000 and 10,000 done; chunk cost
    python -m benchmarks.resume --done 1000,10000,50000 --skip-chunks

Resume. For each count D of `--done`: D small files, and an OUT that holds a row for each,
in chunks of `--commit-every`, with the records and manifest the command writes (the rows
are fabricated: featurizing 10,000 images first would measure nothing more). Then:
- `featurex extract IN --output OUT --resume` as a process of its own, with nothing left to
  do: the wall time, start-up included, and its summary line (it must skip all D);
- the same steps in one warm Spark session, timed apart (median of `--rounds`): listing the
  inputs (a Spark job), reading OUT's records, and matching the two.

Chunk cost. `--chunk-images` small JPEGs featurized (mobilenet_v3_small, random init: the
model costs little, so the fixed costs show) into a fresh OUT, in chunks of every size of
`--chunk-sizes`, in a warm session, in turns for `--rounds` rounds. The cost of one more
chunk is the slope of time against the number of chunks.

Figures go to stdout and to benchmarks/results/resume.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / ".data" / "resume"
MODEL = "mobilenet_v3_small"


def tiny_jpegs(folder: Path, count: int, side: int = 64) -> Path:
    """`count` distinct small JPEGs cut from the sample photos (reused if already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = [Image.open(p).convert("RGB") for p in sorted((ROOT / "samples").glob("*.jpg"))]
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"img{i:06d}.jpg"
        if path.exists():
            continue
        photo = photos[i % len(photos)]
        x, y = rng.integers(0, photo.width - 128), rng.integers(0, photo.height - 128)
        tile = photo.crop((int(x), int(y), int(x) + 128, int(y) + 128)).resize((side, side))
        buffer = io.BytesIO()
        tile.save(buffer, "JPEG", quality=int(rng.integers(70, 95)))
        path.write_bytes(buffer.getvalue())
    return folder


def session() -> Any:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from featurex.cli import _session

    spark = _session("local[2]", {"spark.ui.enabled": "false"})
    assert isinstance(spark, SparkSession)
    return spark


def _config() -> Any:
    from featurex.config import ExtractorConfig

    return ExtractorConfig(model=MODEL, weights=None)


def fabricate(spark: Any, inputs: Path, out: Path, every: int) -> int:
    """An OUT holding a row for every input, laid out as the command commits it."""
    from featurex import _runs

    wanted = _runs.fingerprint(_config(), "bytes", "array")
    store = _runs.LocalStore(str(out))
    source = _runs.Source(spark, [str(inputs)], "bytes", None)
    listing = source.listing()
    _runs.Run(spark, store, source, lambda images, column: images).prepare(wanted, False, True)
    features = pa.array([np.zeros(1024, np.float32)] * min(every, len(listing)))
    for number, start in enumerate(range(0, len(listing), every), start=1):
        chunk = listing.iloc[start : start + every]
        file = f"chunk-{number:06d}.parquet"
        table = pa.table({"path": chunk["path"].tolist(), "features": features[: len(chunk)],
                          "error": pa.nulls(len(chunk), pa.string())})  # fmt: skip
        store.write_text(_runs._record_name(file), _runs._record(file, chunk))
        pq.write_table(table, store.uri(file))
    return len(listing)


def resume_phases(spark: Any, inputs: Path, out: Path, every: int) -> dict[str, float]:
    """The steps of `--resume` before any featurization, timed apart."""
    from featurex import _runs

    wanted = _runs.fingerprint(_config(), "bytes", "array")
    store = _runs.LocalStore(str(out))
    times: dict[str, float] = {}
    start = time.perf_counter()
    _runs.check_output(store, wanted, resume=True, overwrite=False)
    source = _runs.Source(spark, [str(inputs)], "bytes", None)
    listing = source.listing()
    times["list inputs"] = time.perf_counter() - start
    start = time.perf_counter()
    held = _runs.Run(spark, store, source, lambda images, column: images).prepare(
        wanted, True, False
    )
    times["read OUT's records"] = time.perf_counter() - start
    start = time.perf_counter()
    todo = _runs.plan(listing, held, every)
    times["match"] = time.perf_counter() - start
    if todo.skipped != len(listing) or len(todo.new) or len(todo.changed):
        raise AssertionError(f"the fabricated OUT does not match: {todo}")
    times["total"] = sum(times.values())
    return times


def resume_command(inputs: Path, out: Path, every: int) -> dict[str, Any]:
    command = [str(Path(sys.executable).with_name("featurex")), "extract", str(inputs),
               "--output", str(out), "--resume", "--commit-every", str(every), "--model", MODEL,
               "--weights", "none", "--master", "local[2]", "--quiet"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
    return {"wall_s": round(wall, 2), "summary": done.stdout.strip().splitlines()[-1],
            "command": " ".join(command)}  # fmt: skip


def chunk_costs(spark: Any, images: Path, sizes: list[int], rounds: int) -> dict[str, Any]:
    """Seconds to featurize `images` in chunks of each size (warm session, in turns)."""
    from featurex import _runs

    config = _config()
    wanted = _runs.fingerprint(config, "bytes", "array")
    source = _runs.Source(spark, [str(images)], "bytes", None)
    listing = source.listing()
    out = DATA / "chunks-out"

    def run(every: int) -> float:
        shutil.rmtree(out, ignore_errors=True)
        store = _runs.LocalStore(str(out))
        job = _runs.Run(spark, store, source, _runs.feature_rows(config, "array"))
        todo = _runs.plan(listing, job.prepare(wanted, False, False), every)
        start = time.perf_counter()
        totals = job.execute(todo, lambda rows: None)
        assert totals.extracted == len(listing)
        return time.perf_counter() - start

    run(max(sizes))  # warm-up: Python workers started, model loaded
    seconds: dict[int, list[float]] = {every: [] for every in sizes}
    for round_ in range(rounds):
        for every in sizes[round_ % len(sizes) :] + sizes[: round_ % len(sizes)]:
            seconds[every].append(run(every))
    rows = []
    for every in sizes:
        chunks = -(-len(listing) // every)
        median = statistics.median(seconds[every])
        rows.append({"commit_every": every, "chunks": chunks, "seconds": round(median, 2),
                     "range": [round(min(seconds[every]), 2), round(max(seconds[every]), 2)],
                     "images_per_s": round(len(listing) / median, 1)})  # fmt: skip
    slope = np.polyfit([r["chunks"] for r in rows], [r["seconds"] for r in rows], 1)[0]
    return {"images": len(listing), "rows": rows, "seconds_per_chunk": round(float(slope), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--done", default="1000,10000", help="inputs already done, comma-separated")
    parser.add_argument("--commit-every", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-images", type=int, default=2000)
    parser.add_argument("--chunk-sizes", default="2000,200,50,20")
    parser.add_argument("--skip-chunks", action="store_true")
    parser.add_argument("--skip-command", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "resume.json"))
    args = parser.parse_args(argv)

    import pyspark

    import featurex

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "featurex": featurex.__version__,
        "argv": sys.argv[1:],
        "loadavg_start": os.getloadavg(),  # the machine is shared: how busy it was
        "resume": [],
    }
    spark = session()
    try:
        for done in (int(d) for d in args.done.split(",")):
            inputs = tiny_jpegs(DATA / "inputs" / str(done), done, side=16)
            out = DATA / f"out-{done}"
            fabricate(spark, inputs, out, args.commit_every)
            phases = [
                resume_phases(spark, inputs, out, args.commit_every) for _ in range(args.rounds)
            ]
            median = {k: round(statistics.median(p[k] for p in phases), 3) for k in phases[0]}
            records = len(list((out / "_featurex" / "chunks").glob("*.json")))
            row: dict[str, Any] = {"done": done, "records": records, "in_session_s": median}
            print(f"resume with {done} done: {median}", flush=True)
            results["resume"].append(row)
        if not args.skip_chunks:
            images = tiny_jpegs(DATA / "chunk-images", args.chunk_images)
            sizes = [int(s) for s in args.chunk_sizes.split(",")]
            results["chunks"] = chunk_costs(spark, images, sizes, args.rounds)
            print(f"chunk cost: {results['chunks']}", flush=True)
    finally:
        spark.stop()
    if not args.skip_command:  # after stop(): one SparkContext per process, and a fair machine
        for row in results["resume"]:
            done = row["done"]
            row["command"] = resume_command(DATA / "inputs" / str(done), DATA / f"out-{done}",
                                            args.commit_every)  # fmt: skip
            print(f"resume with {done} done, the command: {row['command']}", flush=True)
    results["loadavg_end"] = os.getloadavg()
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
