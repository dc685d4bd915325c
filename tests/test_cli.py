"""`featurex extract`, end to end on a temporary folder, and its answers to bad arguments."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import torchvision
from models_for_tests import assert_close, reference_features

from featurex import ExtractorConfig
from featurex.cli import EXIT_NO_WEIGHTS, EXIT_USAGE, build_parser, main

SCRIPT = Path(sys.executable).with_name("featurex")


def _inputs(tmp_path: Path) -> str:
    """An INPUT folder of its own: an --output inside it would be refused."""
    (tmp_path / "in").mkdir(exist_ok=True)
    return str(tmp_path / "in")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **(env or {})},
    )


@pytest.mark.slow
def test_extract_end_to_end_with_progress_lines(image_dir: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(image_dir, inputs)
    (inputs / "nested" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (inputs / "empty.jpg").write_bytes(b"")  # Spark's file scans skip it: listed all the same
    (inputs / "README.txt").write_text("not an image: not an input either, without --glob")
    out = tmp_path / "features.parquet"
    # Chunks of 4 images: progress counts the images of each chunk as it commits.
    result = _run("extract", str(inputs), "--output", str(out), "--model", "resnet18",
                  "--weights", "none", "--batch-size", "4", "--master", "local[1]",
                  "--commit-every", "4", "--progress-every", "0.2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("featurex: 14 images, 2 failed, ")
    assert "images/s" in summary and summary.endswith(f"-> {out}")
    table = pq.read_table(out).to_pandas()
    assert list(table.columns) == ["path", "features", "error"]
    assert len(table) == 14 and table["path"].is_unique
    assert not table["path"].str.endswith("README.txt").any()
    broken = table[table["path"].str.endswith("broken.jpg")].iloc[0]
    assert broken["features"] is None and broken["error"]
    empty = table.set_index("path").loc[f"file:{inputs}/empty.jpg"]
    assert empty["features"] is None and empty["error"] == "empty input (0 bytes)"
    good = table[table["error"].isna()]
    assert len(good) == 12
    assert all(len(f) == 512 and np.isfinite(f).all() for f in good["features"])

    # Not a terminal: plain lines, images counted as their chunks commit.
    progress = re.findall(
        r"^featurex: progress (\d+)/14 images \((\d+)%\), [\d.]+ images/s, \d+ s(?:, tasks \d+/\d+)?$",
        result.stderr, re.M,
    )  # fmt: skip
    done = [int(d) for d, _ in progress]
    assert done[-1] == 14 and progress[-1][1] == "100"
    assert done == sorted(done) and set(done) <= {0, 4, 8, 12, 14}, done
    assert any(0 < d < 14 for d in done), done
    # Counted, never estimated (an estimate from the task counts would read "~N").
    assert "~" not in result.stderr and "\r" not in result.stderr

    # A second run over the same output needs --overwrite.
    again = _run("extract", str(inputs), "--output", str(out), "--weights", "none")
    assert again.returncode == EXIT_USAGE
    assert again.stderr.strip() == (
        f"featurex: error: output {str(out)!r} exists: pass --overwrite to replace it "
        "(or --resume to continue it)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # In the command line's words: flags, not Python keywords.
        (["--batch-size", "0"], "--batch-size must be a positive int, got 0 (or no --batch-size for the default)"),
        (["--read-ahead", "-1"], "--read-ahead must be a positive int, got -1"),
        (["--max-pixels", "0"], "--max-pixels must be a positive int, got 0"),
        (["--model", "resnet5O"], "unknown model 'resnet5O': did you mean 'resnet50'"),
        (["--model", "tf:resnet50"], "unknown model family 'tf:' in --model tf:resnet50: did you mean 'resnet50'? (the families are 'hf:', 'timm:' and 'open_clip:'; a plain name is torchvision's)"),
        (["--device", "tpu"], "unknown --device 'tpu'"),
        (["--weights", "/missing/model.pth"], "checkpoint file not found: '/missing/model.pth'. Pass an existing .pth/.pt/.safetensors state_dict, a weights name, or --weights none"),
        (["--precision", "int8", "--device", "cuda"], "--precision int8 runs on the CPU (x86 quantized kernels), not on --device cuda: use --device cpu"),
        (["--calibration", "/missing"], "--calibration /missing is used only with --precision int8, got --precision fp32"),
        (["--decode", "gpu", "--device", "cpu"], "--decode gpu decodes on the GPU the model runs on, but --device cpu: pass --device cuda"),
        (
            ["--conf", "executor.memory=8g"],
            "--conf expects spark.KEY=VALUE, got 'executor.memory=8g'",
        ),
        (["--progress-every", "0"], "--progress-every must be a positive number, got 0.0"),
        (["--commit-every", "0"], "--commit-every must be a positive number of images, got 0"),
        (
            ["--resume", "--overwrite"],
            "--resume keeps OUT and --overwrite replaces it: pass one of them",
        ),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_with_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["extract", _inputs(tmp_path), "--output", str(tmp_path / "o"), *args])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and err.startswith("featurex: error: ")
    assert err.count("\n") == 1


def test_bad_choice_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["extract", _inputs(tmp_path), "--output", str(tmp_path / "o"), "--precision", "int4"])
    assert info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("featurex: error: argument --precision: invalid choice: 'int4'")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("option", "value"), [("--input-type", "url"), ("--output-type", "matrix")]
)
def test_bad_input_or_output_type_exits_2_naming_the_choices(
    option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["extract", _inputs(tmp_path), "--output", str(tmp_path / "o"), option, value])
    assert info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"featurex: error: argument {option}: invalid choice: '{value}'")
    assert err.count("\n") == 1


def test_missing_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["extract", str(tmp_path / "nope"), "--output", str(tmp_path / "o")])
    assert code == EXIT_USAGE
    assert "input not found" in capsys.readouterr().err


def test_no_internet_exits_3_naming_the_alternatives(tmp_path: Path) -> None:
    # A proxy on a closed loopback port makes the download fail fast, online or not.
    proxy = "http://127.0.0.1:9"
    env = {"TORCH_HOME": str(tmp_path / "torch"), "https_proxy": proxy, "HTTPS_PROXY": proxy,
           "http_proxy": proxy, "HTTP_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}  # fmt: skip
    result = _run("extract", _inputs(tmp_path), "--output", str(tmp_path / "o"),
                  "--model", "resnet18", env=env)  # fmt: skip
    assert result.returncode == EXIT_NO_WEIGHTS
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot download ResNet18_Weights.IMAGENET1K_V1" in lines[0]
    # In the command line's words.
    assert "--weights /path/to/checkpoint.pth" in lines[0] and "--weights none" in lines[0]
    assert "weights=None" not in lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "cuda"], "--device cuda, but this machine has no CUDA GPU, and local Spark (--master local[*]) runs its tasks here: pass --device cpu (or auto), or a --master whose executors have GPUs"),
        (["--device", "cuda:1", "--master", "local[2]"], "--device cuda:1, but this machine has no CUDA GPU, and local Spark (--master local[2])"),
        (["--decode", "gpu"], "--decode gpu, but this machine has no CUDA GPU, and local Spark (--master local[*]) runs its tasks here: pass --decode auto (or cpu), or a --master whose executors have GPUs"),
    ],
)  # fmt: skip
def test_a_gpu_this_machine_lacks_exits_2_before_local_spark_starts(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["extract", _inputs(tmp_path), "--output", str(tmp_path / "o"),
                 "--weights", "none", *args])  # fmt: skip
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"featurex: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_on_a_cluster_the_executors_gpus_are_not_the_drivers() -> None:
    # The driver may have no GPU where the executors do: nothing is refused here (a task
    # on an executor without one fails at once: tests/test_spark.py).
    from featurex.cli import _check_device_here

    config = ExtractorConfig(model="resnet18", weights=None, device="cuda", decode="gpu")
    _check_device_here(config, "spark://cluster:7077")


@pytest.mark.slow
def test_a_failed_run_exits_1_with_the_workers_reason_and_the_same_command_runs_again(
    image_dir: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.png").write_bytes((image_dir / "img01.png").read_bytes())
    (inputs / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "o"
    command = ("extract", str(inputs), "--output", str(out), "--model", "resnet18",
               "--weights", "none", "--on-error", "raise", "--master", "local[1]", "-q")  # fmt: skip
    result = _run(*command)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"featurex: error: the job failed: ImageError: cannot featurize 'file:{inputs}/b.jpg': "
    ), last
    # It committed nothing, and left its manifest: the same command runs again as it was.
    assert (out / "_featurex" / "manifest.json").is_file() and not list(out.glob("chunk-*"))
    (inputs / "b.jpg").unlink()
    again = _run(*command)
    assert again.returncode == 0, again.stderr[-2000:]
    accounting, summary = again.stdout.strip().splitlines()[-2:]
    assert accounting == "featurex: 1 file found = 1 row"
    assert summary.startswith("featurex: 1 images, 0 failed, ")
    assert pq.read_table(out).num_rows == 1


def test_version_and_module_entry_point() -> None:
    import featurex

    result = subprocess.run([sys.executable, "-m", "featurex", "--version"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == f"featurex {featurex.__version__}"


def _featurex_output(out: Path) -> None:
    """What an earlier run left in OUT: its manifest, a committed chunk and its record."""
    (out / "_featurex" / "chunks").mkdir(parents=True)
    (out / "_featurex" / "manifest.json").write_text(json.dumps({"format": 1, "fingerprint": {}}))
    (out / "_featurex" / "chunks" / "chunk-000009.json").write_text(
        json.dumps({"file": "chunk-000009.parquet", "paths": ["x"], "sizes": [1], "mtimes": [1]})
    )
    pd.DataFrame({"path": ["x"], "features": [[0.0]], "error": [None]}).to_parquet(
        out / "chunk-000009.parquet"
    )


def test_overwrite_refuses_a_folder_featurex_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("a user's notes")
    code = main(["extract", _inputs(tmp_path), "--output", str(theirs), "--overwrite",
                 "--weights", "none"])  # fmt: skip
    assert code == EXIT_USAGE
    assert capsys.readouterr().err == (
        f"featurex: error: --overwrite: output {str(theirs)!r} was not written by featurex "
        "extract (no _featurex/manifest.json), and featurex replaces only its own output: pass "
        "another --output, or empty or remove that folder yourself\n"
    )
    assert (theirs / "notes.txt").read_text() == "a user's notes"


@pytest.mark.parametrize(
    ("inputs", "output", "message"),
    [
        ("in", "in/out", "--output '{t}/in/out' is inside the input '{t}/in', so a later run would read its own files as images: pass an --output outside the inputs"),
        ("in", "in", "--output '{t}/in' is inside the input '{t}/in'"),
        ("out/in", "out", "the input '{t}/out/in' is inside --output '{t}/out', which featurex writes and --overwrite replaces: pass an --output outside the inputs"),
    ],
)  # fmt: skip
def test_an_output_and_an_input_inside_one_another_are_refused(
    inputs: str, output: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / inputs).mkdir(parents=True)
    code = main(["extract", str(tmp_path / inputs), "--output", str(tmp_path / output),
                 "--weights", "none"])  # fmt: skip
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"featurex: error: {message.format(t=tmp_path)}") and err.count("\n") == 1


@pytest.mark.slow
def test_an_existing_output_is_replaced_only_with_overwrite(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    _featurex_output(out)
    as_file = tmp_path / "out.parquet"
    as_file.write_text("not a folder")
    for target, message in (
        (str(out), f"output {str(out)!r} exists: pass --overwrite to replace it (or --resume"),
        (f"file:{out}", f"output 'file:{out}' exists: pass --overwrite"),  # a file: URI
        (f"file://{as_file}", f"output 'file://{as_file}' is a file, which featurex does not"),
    ):
        code = main(["extract", str(image_dir), "--output", target, "--weights", "none"])
        assert code == EXIT_USAGE
        assert message in capsys.readouterr().err
    assert as_file.read_text() == "not a folder"

    # --overwrite replaces it. This run reads the PNGs (--glob) with Spark's image source.
    result = _run("extract", str(image_dir), "--output", f"file://{out}", "--overwrite", "-q",
                  "--input-type", "image", "--glob", "*.png", "--model", "resnet18",
                  "--weights", "none", "--master", "local[1]")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (out / "chunk-000009.parquet").exists()
    summary = result.stdout.strip().splitlines()[-1]
    # OUT as the user wrote it.
    assert summary.startswith("featurex: 3 images, 0 failed, ")
    assert summary.endswith(f"-> file://{out}")
    table = pd.read_parquet(out)
    assert len(table) == 3 and table["path"].str.endswith(".png").all()
    assert table["error"].isna().all()
    # Lossless PNGs: Spark's BGR structs hold the files' pixels, so the features are the
    # reference's.
    files = [Path(p.removeprefix("file://")).read_bytes() for p in table["path"]]
    assert_close(np.stack(table["features"].to_list()), reference_features(files, "resnet18"))


def _run_on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Runs the command with stderr on a pseudo-terminal: (exit code, stdout, terminal output)."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=follower, text=True,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    stdout = proc.stdout.read() if proc.stdout else ""
    return proc.wait(timeout=300), stdout, b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_path_listings_checkpoint_vector_output_and_a_terminal_progress_bar(
    image_dir: Path, tmp_path: Path
) -> None:
    listing = tmp_path / "lists" / "images.txt"
    listing.parent.mkdir()
    (tmp_path / "lists" / "near.png").write_bytes((image_dir / "img01.png").read_bytes())
    listing.write_text(
        f"near.png\n\n# a comment\n{image_dir / 'img02.jpg'}\n"
        f"file://{image_dir / 'img05.png'}\n{tmp_path / 'missing.jpg'}\n"
    )
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "img09.png").write_bytes((image_dir / "nested" / "img09.png").read_bytes())
    torch.manual_seed(5)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, tmp_path / "r18.pth")
    out = tmp_path / "paths.parquet"
    code, stdout, terminal = _run_on_a_terminal(
        "extract", str(listing), str(folder), "--output", str(out), "--input-type", "path",
        "--output-type", "vector", "--model", "resnet18", "--weights", str(tmp_path / "r18.pth"),
        "--master", "local[1]",
    )  # fmt: skip
    assert code == 0, terminal[-2000:]
    assert stdout.strip().splitlines()[-1].startswith("featurex: 5 images, 1 failed, ")
    # Redrawn in place: carriage returns, erase-to-end-of-line, and the finished bar.
    assert "\r" in terminal and "\x1b[K" in terminal
    assert "extract [########################] 5/5 images, " in terminal

    table = pq.read_table(out).to_pandas().set_index("path")
    names = {Path(p.removeprefix("file:")).name: p for p in table.index}
    assert sorted(names) == ["img02.jpg", "img05.png", "img09.png", "missing.jpg", "near.png"]
    assert "cannot read" in table.loc[names["missing.jpg"], "error"]
    assert table.loc[names["missing.jpg"], "features"] is None
    vectors = {n: table.loc[p, "features"] for n, p in names.items() if n != "missing.jpg"}
    assert all(v["type"] == 1 and len(v["values"]) == 512 for v in vectors.values())  # dense
    images = {"near.png": "img01.png", "img02.jpg": "img02.jpg", "img05.png": "img05.png",
              "img09.png": "nested/img09.png"}  # fmt: skip
    files = [(image_dir / images[n]).read_bytes() for n in vectors]
    expected = reference_features(files, "resnet18", state_dict=state)  # the checkpoint's
    actual = np.stack([np.asarray(v["values"]) for v in vectors.values()]).astype(np.float32)
    assert_close(actual, expected)


def _info(*args: str, torch_home: Path) -> subprocess.CompletedProcess[str]:
    return _run("info", *args, env={"TORCH_HOME": str(torch_home)})


def test_info_reports_versions_java_device_and_the_weights_cache(tmp_path: Path) -> None:
    import pyspark

    import featurex

    result = _info("--model", "resnet18", "--json", torch_home=tmp_path)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["featurex"] == featurex.__version__ and info["pyspark"] == pyspark.__version__
    assert info["torch"] == torch.__version__ and info["torchvision"] == torchvision.__version__
    assert info["python"] == platform.python_version()
    java = subprocess.run([info["java"]["path"], "-version"], capture_output=True, text=True)
    assert info["java"]["version"] == java.stderr.splitlines()[0]
    assert info["device"]["cuda"] == torch.cuda.is_available()
    assert len(info["device"]["gpus"]) == (
        torch.cuda.device_count() if info["device"]["cuda"] else 0
    )
    cpu_flags = open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].split()
    assert info["cpu"]["name"] and set(info["cpu"]["features"]) <= set(cpu_flags)
    assert ("avx2" in info["cpu"]["features"]) == ("avx2" in cpu_flags)
    assert info["cpu"]["recommended_precision"] in ("fp32", "bf16", "int8")
    weights = info["weights"]
    expected_file = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert weights["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert weights["file"] == str(expected_file) and weights["cached"] is False

    # Once the file is in the hub cache, it is reported as cached.
    expected_file.parent.mkdir(parents=True)
    expected_file.write_bytes(b"")
    text = _info("--model", "resnet18", torch_home=tmp_path)
    assert text.returncode == 0, text.stderr
    lines = dict(line.split(None, 1) for line in text.stdout.strip().splitlines())
    assert lines["weights"] == f"resnet18 ResNet18_Weights.IMAGENET1K_V1: cached at {expected_file}"
    assert lines["java"].startswith(info["java"]["version"])
    assert set(lines) == {"featurex", "python", "executable", "pyspark", "torch", "torchvision",
                          "java", "device", "cpu", "weights", "cache"}  # fmt: skip
    assert lines["cpu"].endswith(f"recommended precision {info['cpu']['recommended_precision']}")
    # The optimized graphs' disk cache: the session's own folder, and what it holds.
    root = Path(os.environ["FEATUREX_CACHE_DIR"])
    graphs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    size = sum(f.stat().st_size for g in graphs for f in g.iterdir())
    assert info["cache"] == {"path": str(root), "graphs": len(graphs), "bytes": size}
    noun = "optimized graph" if len(graphs) == 1 else "optimized graphs"
    assert (
        lines["cache"] == f"{root}: {len(graphs)} {noun}, {size / 1e6:.0f} MB (FEATUREX_CACHE_DIR)"
    )


def test_info_rejects_an_unknown_model_in_one_line(tmp_path: Path) -> None:
    result = _info("--model", "resnet5O", torch_home=tmp_path)
    assert result.returncode == EXIT_USAGE
    assert result.stderr.startswith("featurex: error: unknown model 'resnet5O'")
    assert result.stderr.count("\n") == 1


def test_every_option_is_a_flag_with_the_configs_default_that_reaches_the_config() -> None:
    from featurex.cli import _config
    from featurex.config import OPTIONS

    parser = build_parser()
    given = parser.parse_args(["extract", "in", "--output", "out"])
    defaults = {f.name: f.default for f in dataclasses.fields(ExtractorConfig)}
    for option in ("model", "weights", *OPTIONS):
        if option != "transform":  # a Python callable: no flag
            assert getattr(given, option) == defaults[option], option
    args = parser.parse_args([
        "extract", "in", "--output", "out", "--model", "resnet18", "--weights", "none",
        "--seed", "3", "--batch-size", "8", "--device", "cpu", "--precision", "bf16",
        "--decode", "cpu", "--decode-threads", "2", "--read-ahead", "4", "--normalize",
        "--on-error", "raise", "--max-pixels", "1000000", "--no-fast-decode", "--optimize",
        "--trust-checkpoint",
    ])  # fmt: skip
    assert _config(args) == ExtractorConfig(
        model="resnet18", weights=None, seed=3, batch_size=8, device="cpu", precision="bf16",
        decode="cpu", decode_threads=2, read_ahead=4, normalize=True, on_error="raise",
        max_pixels=1_000_000, fast_decode=False, optimize=True, trust_checkpoint=True,
    )  # fmt: skip
    samples = str(Path(__file__).parents[1] / "samples")
    int8 = parser.parse_args(["extract", "in", "-o", "out", "--weights", "none",
                              "--precision", "int8", "--calibration", samples])  # fmt: skip
    assert _config(int8).calibration == samples


def test_errors_name_each_option_by_its_flag() -> None:
    words = build_parser().parse_args(["extract", "in", "--output", "out"]).words
    assert [
        words.option("batch_size"), words.option("weights", None), words.option("device", "cpu"),
        words.option("fast_decode", False), words.option("trust_checkpoint", True),
        words.option("model", "hf:/my models/clip"), words.option("calibration", None),
    ] == [
        "--batch-size", "--weights none", "--device cpu", "--no-fast-decode",
        "--trust-checkpoint", "--model 'hf:/my models/clip'", "no --calibration",
    ]  # fmt: skip
    assert words.option("with_errors", True) == "with_errors=True"  # no flag: its keyword


def _in_session(spark: object, *argv: str) -> int:
    """`featurex extract ...` through the command's own steps, in the tests' Spark session
    (the command would start a session of its own, and stop it)."""
    from featurex import _runs, cli

    args = build_parser().parse_args(["extract", *argv, "--master", "local[2]", "-q"])
    config = cli._config(args)
    wanted = _runs.fingerprint(config, args.input_type, args.output_type)
    return cli._run(spark, args, config, wanted, time.perf_counter(), None)  # type: ignore[arg-type]


@pytest.mark.slow
def test_every_file_of_a_messy_folder_is_a_row_or_a_counted_omission_and_resume_adds_hidden_names(
    spark: object,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import messy

    inputs, out = tmp_path / "in", tmp_path / "out"
    fates = messy.build(inputs)
    model = ("--model", "resnet18", "--weights", "none")
    assert _in_session(spark, str(inputs), "--output", str(out), *model) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == (
        "featurex: 28 files found = 23 rows + 5 left out: 3 not images (.DS_Store, "
        "_archive/_SUCCESS, notes.txt); 2 macOS ._ files (._Grace Hopper.JPG, nested/._b.JPEG)"
    )
    assert lines[-1].startswith("featurex: 23 images, 3 failed, 0 skipped as already done, ")
    table = pd.read_parquet(out).set_index("path")
    rows = {name for name, fate in fates.items() if fate in ("row", "error")}
    assert sorted(table.index) == sorted(f"file:{inputs / name}" for name in rows)
    failed = {p.removeprefix(f"file:{inputs}/") for p in table.index[table["error"].notna()]}
    assert failed == {name for name, fate in fates.items() if fate == "error"}
    assert table.loc[f"file:{inputs}/empty.jpg", "error"] == "empty input (0 bytes)"
    assert all(len(f) == 512 for f in table.loc[table["error"].isna(), "features"])
    # Hidden names are read by featurex's reader: the same features as their twin read by Spark.
    (inputs / "_twin.JPG").write_bytes((inputs / "Grace Hopper.JPG").read_bytes())

    # Later: a camera's "_" file, an AppleDouble file, and a file changed in place.
    (inputs / "_DSC0002.JPG").write_bytes((inputs / "_DSC0001.JPG").read_bytes())
    (inputs / "日本" / "._右.png").write_bytes(messy.APPLE_DOUBLE)
    changed = inputs / "café" / "menu.png"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 5 * 10**9))
    assert _in_session(spark, str(inputs), "--output", str(out), *model, "--resume") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("featurex: 31 files found = 25 rows + 6 left out: ")
    assert "3 macOS ._ files (._Grace Hopper.JPG, nested/._b.JPEG, 日本/._右.png)" in lines[-2]
    assert lines[-1].startswith("featurex: 3 images, 0 failed, 22 skipped as already done, ")
    table = pd.read_parquet(out).set_index("path")
    assert len(table) == 25 and table.index.is_unique
    twin, original = (
        table.loc[f"file:{inputs}/{n}", "features"] for n in ("_twin.JPG", "Grace Hopper.JPG")
    )
    np.testing.assert_array_equal(twin, original)

    # Once more with nothing to do: said at once, with no Spark session and no job.
    def no_spark(*args: object) -> None:
        raise AssertionError("a resume with nothing to do started Spark")

    monkeypatch.setattr("featurex.cli._session", no_spark)
    assert main(["extract", str(inputs), "--output", str(out), *model, "--resume"]) == 0
    monkeypatch.undo()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("featurex: 31 files found = 25 rows + 6 left out: ")
    assert lines[-1].startswith("featurex: 0 images, 0 failed, 25 skipped as already done, ")

    # --input-type path: the same files, read on the executors.
    listed = tmp_path / "paths"
    assert (
        _in_session(spark, str(inputs), "--output", str(listed), *model, "--input-type", "path")
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("featurex: 31 files found = 25 rows + 6 left out: ")
    assert sorted(pd.read_parquet(listed)["path"]) == sorted(table.index)


@pytest.mark.slow
def test_the_summary_and_the_manifest_say_which_precision_ran(
    spark: object,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from featurex.models import runtime

    # A CPU without bf16 kernels (this one may have them: the probe says it has not).
    monkeypatch.setattr(runtime, "_cpu_has_bf16", lambda: False)
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "one.jpg").write_bytes(
        b""
    )  # a row without a decode: the precision is the driver's word
    out = tmp_path / "out"
    argv = (str(inputs), "--output", str(out), "--model", "resnet18", "--weights", "none",
            "--precision", "bf16", "--device", "cpu")  # fmt: skip
    assert _in_session(spark, *argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "(resnet18, fp32, bf16 asked) ->" in re.sub(
        r"\([\d.]+ s, start-up [\d.]+ s, ", "(", summary
    ), summary
    manifest = json.loads((out / "_featurex" / "manifest.json").read_text())
    assert manifest["precision"] == {"asked": "bf16", "ran": ["fp32"]}
    assert manifest["fingerprint"]["precision"] == "bf16"  # what a --resume must match

    # Where it runs as asked, the summary names it once.
    monkeypatch.setattr(runtime, "_cpu_has_bf16", lambda: True)
    assert _in_session(spark, *argv, "--resume") == 0
    assert "(resnet18, bf16) ->" in re.sub(
        r"\([\d.]+ s, start-up [\d.]+ s, ", "(", capsys.readouterr().out
    )
    manifest = json.loads((out / "_featurex" / "manifest.json").read_text())
    assert manifest["precision"] == {"asked": "bf16", "ran": ["fp32", "bf16"]}


def test_int8_slower_than_fp32_on_this_cpu_is_a_one_line_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from featurex.models import runtime

    # By `featurex info`'s measure: no int8 dot products (VNNI, AMX) recommends bf16 or fp32.
    monkeypatch.setattr(runtime, "cpu_features", lambda: ("avx512f", "avx2"))
    monkeypatch.setattr(runtime, "_cpu_has_bf16", lambda: True)
    runtime.warn_once.cache_clear()
    with caplog.at_level("WARNING", logger="featurex.models"):
        ExtractorConfig(model="resnet18", weights=None, device="cpu", precision="int8")
    assert [r.getMessage() for r in caplog.records] == [
        "int8 is likely slower than fp32 on this CPU, which has no int8 dot-product "
        "instructions (VNNI, AMX): `featurex info` recommends bf16 here"
    ]
    caplog.clear()
    monkeypatch.setattr(runtime, "cpu_features", lambda: ("amx_int8", "avx512f", "avx2"))
    runtime.warn_once.cache_clear()
    with caplog.at_level("WARNING", logger="featurex.models"):
        ExtractorConfig(model="resnet18", weights=None, device="cpu", precision="int8")
    assert caplog.records == []
