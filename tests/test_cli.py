"""`featurex extract`, end to end on a temporary folder, and its answers to bad arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import torchvision

from featurex.cli import EXIT_NO_WEIGHTS, EXIT_USAGE, main

SCRIPT = Path(sys.executable).with_name("featurex")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **(env or {})},
    )


def test_extract_end_to_end(image_dir: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(image_dir, inputs)
    (inputs / "nested" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "features.parquet"
    result = _run("extract", str(inputs), "--output", str(out), "--model", "resnet18",
                  "--weights", "none", "--batch-size", "4", "--master", "local[2]")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("featurex: 13 images, 1 failed, ")
    assert "images/s" in summary and str(out) in summary
    table = pq.read_table(out).to_pandas()
    assert list(table.columns) == ["path", "features", "error"]
    assert len(table) == 13 and table["path"].is_unique
    broken = table[table["path"].str.endswith("broken.jpg")].iloc[0]
    assert broken["features"] is None and broken["error"]
    good = table[table["error"].isna()]
    assert len(good) == 12
    assert all(len(f) == 512 and np.isfinite(f).all() for f in good["features"])

    # A second run over the same output needs --overwrite.
    again = _run("extract", str(inputs), "--output", str(out), "--weights", "none")
    assert again.returncode == EXIT_USAGE
    assert again.stderr.strip() == (
        f"featurex: error: output {str(out)!r} exists: pass --overwrite to replace it"
    )


def test_glob_selects_files(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "png.parquet"
    result = _run("extract", str(image_dir), "--output", str(out), "--model", "resnet18",
                  "--weights", "none", "--glob", "*.png", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_parquet(out)
    assert len(table) == 3 and table["path"].str.endswith(".png").all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "batch_size must be a positive int"),
        (["--model", "resnet5O"], "unknown model 'resnet5O': did you mean 'resnet50'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--weights", "/missing/model.pth"], "checkpoint file not found: '/missing/model.pth'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["extract", str(tmp_path), "--output", str(tmp_path / "o"), *args])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and err.startswith("featurex: error: ")
    assert err.count("\n") == 1


def test_bad_choice_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["extract", str(tmp_path), "--output", str(tmp_path / "o"), "--precision", "int4"])
    assert info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("featurex: error: argument --precision: invalid choice: 'int4'")
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
    result = _run("extract", str(tmp_path), "--output", str(tmp_path / "o"),
                  "--model", "resnet18", env=env)  # fmt: skip
    assert result.returncode == EXIT_NO_WEIGHTS
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot download ResNet18_Weights.IMAGENET1K_V1" in lines[0]
    assert "--weights PATH" in lines[0] and "--weights none" in lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the job must fail for want of CUDA")
def test_a_failing_job_exits_1_with_the_workers_reason(image_dir: Path, tmp_path: Path) -> None:
    result = _run("extract", str(image_dir / "img01.png"), "--output", str(tmp_path / "o"),
                  "--model", "resnet18", "--weights", "none", "--device", "cuda", "-q")  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "featurex: error: the job failed: "
        "RuntimeError: device='cuda' but CUDA is not available in this process"
    )


def test_version_and_module_entry_point() -> None:
    import featurex

    result = subprocess.run([sys.executable, "-m", "featurex", "--version"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == f"featurex {featurex.__version__}"


def test_checkpoint_weights_on_the_command_line(image_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(5)
    ckpt = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), ckpt)
    out = tmp_path / "ckpt.parquet"
    result = _run("extract", str(image_dir / "img01.png"), "--output", str(out),
                  "--model", "resnet18", "--weights", str(ckpt), "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(pd.read_parquet(out)) == 1
