"""Spark Connect: a real Connect server bound to 127.0.0.1, a client with no SparkContext.

The module starts one server (`spark-submit --class ...SparkConnectServer` from the pip
package) with a token, runs one client process against it, and stops the server by PID.
`SparkSession.builder.remote("local[2]")` is not used: it starts its server inside the
client, where the static `spark.connect.grpc.binding.*` settings are not ours to control.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyspark
import pytest
from models_for_tests import assert_close, reference_features

ROOT = Path(__file__).parents[1]
SAMPLES = ROOT / "samples"
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"

# Runs as a Connect client in its own process: a Connect session in this pytest process
# would switch pyspark into Connect mode for every other test module.
CLIENT = textwrap.dedent(
    """
    import json, sys
    from pyspark.sql import SparkSession
    import featurex as fx

    url, samples, out = sys.argv[1:]
    result = {}
    spark = SparkSession.builder.remote(url).getOrCreate()
    result["session"] = type(spark).__module__
    try:
        spark.sparkContext
        result["sparkContext"] = "available"
    except Exception as exc:
        result["sparkContext"] = type(exc).__name__
    files = spark.read.format("binaryFile").load(samples).select("path", "content")

    col = fx.image_features("content", model="resnet18", weights=None, with_errors=True)
    rows = files.select("path", col.alias("r")).collect()
    result["image_features"] = {r["path"]: r["r"]["features"] for r in rows}
    result["errors"] = [r["r"]["error"] for r in rows if r["r"]["error"] is not None]

    featurizer = fx.ImageFeaturizer(model="resnet18", weights="none", outputType="vector",
                                    outputCol="v")
    out_df = featurizer.transform(files)
    result["featurizer_type"] = dict(out_df.dtypes)["v"]
    result["featurizer"] = {r["path"]: r["v"].toArray().tolist()
                            for r in out_df.select("path", "v").collect()}
    featurizer.write().save(out + ".stage")  # DefaultParamsWritable, through Connect
    loaded = fx.ImageFeaturizer.load(out + ".stage")
    result["loaded_same"] = loaded.extractParamMap() == featurizer.extractParamMap()
    spark.stop()

    try:  # the server wants the token: a wrong one is refused
        SparkSession.builder.remote(url + "/;token=wrong").create().range(1).count()
        result["wrong_token"] = "accepted"
    except Exception as exc:
        result["wrong_token"] = str(exc)
    with open(out, "w") as f:
        json.dump(result, f)
    """
)


@dataclass(frozen=True)
class Server:
    pid: int
    port: int
    token: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> list[str]:
    """The local addresses of the TCP sockets listening on `port` (Linux /proc/net)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(addr)
                # /proc stores each 32-bit word in host (little-endian) order.
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.append(str(ipaddress.ip_address(raw)))
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SPARK_REMOTE", "SPARK_CONNECT"))
    }
    # The server's Python workers import this checkout's featurex.
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return {**env, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
            "PYTHONPATH": path, **extra}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not list((Path(pyspark.__file__).parent / "jars").glob("spark-connect_*.jar")):
        pytest.skip(
            f"pyspark {pyspark.__version__}'s pip package has no Spark Connect server "
            f"(no jars/spark-connect_*.jar): Connect runs on pyspark 4.x"
        )
    port, token = _free_port(), uuid.uuid4().hex
    log = tmp_path_factory.mktemp("connect") / "server.log"
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    cmd = [str(submit), "--master", "local[2]", "--class", SERVER_CLASS,
           "--name", "featurex-connect-tests",
           "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
           "--conf", f"spark.connect.grpc.binding.port={port}",
           "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=2"]  # fmt: skip
    # spark-submit execs the JVM, so this PID is the server's own.
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_env(SPARK_CONNECT_AUTHENTICATE_TOKEN=token),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not _listening(port):
            assert proc.poll() is None, f"server exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"server not up: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield Server(proc.pid, port, token, log)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def client(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("client")
    (folder / "client.py").write_text(CLIENT)
    out = folder / "result.json"
    # With a token, pyspark's client uses gRPC local credentials only for host "localhost".
    url = f"sc://localhost:{server.port}"
    env = _env(SPARK_CONNECT_AUTHENTICATE_TOKEN=server.token)
    result = subprocess.run(
        [sys.executable, str(folder / "client.py"), url, str(SAMPLES), str(out)],
        capture_output=True, text=True, timeout=400, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _by_name(features: dict[str, list[float]]) -> tuple[list[str], np.ndarray]:
    names = sorted(features, key=lambda p: Path(p).name)
    return [Path(p).name for p in names], np.array([features[p] for p in names], np.float32)


def _reference(names: list[str]) -> np.ndarray:
    return reference_features([(SAMPLES / n).read_bytes() for n in names], "resnet18")


@pytest.mark.slow
def test_the_server_listens_on_loopback_only(server: Server) -> None:
    addresses = _listening(server.port)
    assert addresses, "nothing listens on the Connect port"
    for address in addresses:
        ip = ipaddress.ip_address(address)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        assert (mapped or ip) == ipaddress.ip_address("127.0.0.1"), addresses


@pytest.mark.slow
def test_the_client_has_no_spark_context_and_needs_the_token(client: dict[str, Any]) -> None:
    assert client["session"].startswith("pyspark.sql.connect"), client["session"]
    assert client["sparkContext"] != "available"
    assert "UNAUTHENTICATED" in client["wrong_token"] or "token" in client["wrong_token"]


@pytest.mark.slow
def test_image_features_under_connect_equal_the_reference(client: dict[str, Any]) -> None:
    names, features = _by_name(client["image_features"])
    assert len(names) == 6 and client["errors"] == []
    assert_close(features, _reference(names))


@pytest.mark.slow
def test_image_featurizer_under_connect_equals_the_reference_and_saves(
    client: dict[str, Any],
) -> None:
    assert client["featurizer_type"] == "vector" and client["loaded_same"] is True
    names, features = _by_name(client["featurizer"])
    assert len(names) == 6
    assert_close(features, _reference(names))


def test_featurex_never_touches_spark_context_rdds_or_broadcast() -> None:
    forbidden = re.compile(r"sparkContext|SparkContext|\.rdd\b|broadcast|_jvm|_jsc|_jdf")
    # The CLI creates its own classic session and reads the status tracker for its
    # progress display, and its runs reach an OUT and list INPUTs that are not local through
    # Hadoop's FileSystem; nothing it shares with library users (a Connect client) does.
    allowed = {
        ("cli.py", "tracker = spark.sparkContext.statusTracker()"),
        ("_inputs.py", "jvm, jsc = self.spark._jvm, self.spark._jsc"),
        ("_runs.py", "jvm, jsc = spark._jvm, spark._jsc"),
        (
            "_runs.py",
            "self._new_array = spark.sparkContext._gateway.new_array  # type: ignore[union-attr]",
        ),
    }
    hits = [
        (path.name, line.strip())
        for path in sorted((ROOT / "featurex").glob("*.py"))
        for line in path.read_text().splitlines()
        if forbidden.search(line) and (path.name, line.strip()) not in allowed
    ]
    assert hits == []
