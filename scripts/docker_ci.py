"""Helpers of scripts/test_docker.sh (`make test-docker`), run with the project's .venv:

index DIR REQUIREMENT...      a PEP 503 index of what pip resolves for REQUIREMENT here
                              (files on this disk linked, the rest PyPI's own URLs)
free-port                     a free TCP port on 127.0.0.1
outputs OUT SAMPLES UID       the Parquet in OUT: a row per sample, and every file UID's
events DIR HOST...            the Spark event log in DIR: executors (and tasks) on each HOST
workers URL N TIMEOUT         the master's JSON API at URL lists N workers ALIVE
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlparse


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def index(folder: str, *requirements: str) -> None:
    """pip's own resolution (its configuration included: on this machine, wheels on the local
    disk) of REQUIREMENTS, served as a simple index by `python -m http.server` from FOLDER."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    report = root / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-qq",
         "--only-binary=:all:", "--report", str(report), *requirements],
        check=True,
    )  # fmt: skip
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    links: dict[str, list[str]] = {}
    local = 0
    for item in json.loads(report.read_text())["install"]:
        info = item["download_info"]
        url = info["url"]
        hashes = info.get("archive_info", {}).get("hashes", {})
        fragment = f"#sha256={hashes['sha256']}" if "sha256" in hashes else ""
        parsed = urlparse(url)
        name = Path(unquote(parsed.path)).name
        if parsed.scheme == "file":
            link = files / name
            if not link.exists():
                link.symlink_to(unquote(parsed.path))
            href = f"../../files/{name}"
            local += 1
        else:
            href = url.split("#")[0]
        links.setdefault(_normalize(item["metadata"]["name"]), []).append(
            f'<a href="{html.escape(href)}{fragment}">{html.escape(name)}</a>'
        )
    for project, anchors in links.items():
        page = root / "simple" / project / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text("<!DOCTYPE html><html><body>\n" + "\n".join(anchors) + "\n</body></html>\n")
    print(f"index: {len(links)} projects, {local} files from this disk, "
          f"{len(links) - local} from PyPI")  # fmt: skip


def free_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def outputs(out: str, samples: str, uid: str) -> None:
    """A row per sample (by name), features of one length, no error; every file under OUT
    owned by UID (the user who owns the bind-mounted folder can delete the output)."""
    import pyarrow.parquet as pq

    table = pq.read_table(Path(out) / "features.parquet").to_pylist()
    names = sorted(Path(r["path"]).name for r in table)
    expected = sorted(p.name for p in Path(samples).iterdir())
    assert names == expected, f"rows {names} != samples {expected}"
    lengths = {len(r["features"]) for r in table if r["features"] is not None}
    failed = [r["path"] for r in table if r["features"] is None or r["error"]]
    assert not failed and len(lengths) == 1, f"failed rows {failed}, feature lengths {lengths}"
    owners = Counter(p.stat().st_uid for p in Path(out).rglob("*"))
    assert set(owners) == {int(uid)}, f"owners of the files under {out}: {dict(owners)}"
    print(f"parquet: {len(table)} rows = {len(expected)} samples, {lengths.pop()} features each, "
          f"{sum(owners.values())} files owned by uid {uid}")  # fmt: skip


def events(folder: str, *hosts: str) -> None:
    """Executors added, and tasks ended, per host, from the driver's event log (one file or
    Spark 4's eventlog_v2_* folder; written uncompressed)."""
    executors: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    logs = [p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")]
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event["Event"] == "SparkListenerExecutorAdded":
                executors[event["Executor Info"]["Host"]] += 1
            elif event["Event"] == "SparkListenerTaskEnd":
                tasks[event["Task Info"]["Host"]] += 1
    print(f"event log: executors per host {dict(executors)}, tasks per host {dict(tasks)}")
    missing = [h for h in hosts if not executors[h]]
    assert logs and not missing, f"no executor on {missing} (event logs: {logs})"


def workers(url: str, count: str, timeout: str) -> None:
    deadline = time.monotonic() + float(timeout)
    state: dict[str, object] = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                state = json.load(response)
        except OSError:
            time.sleep(1)
            continue
        alive = sorted(w["host"] for w in state.get("workers", []) if w["state"] == "ALIVE")
        if len(alive) >= int(count):
            print(f"master {url}: {state.get('status')}, workers ALIVE {alive}, "
                  f"{state.get('cores')} cores")  # fmt: skip
            return
        time.sleep(1)
    sys.exit(f"master {url}: not {count} workers ALIVE within {timeout} s: {state}")


if __name__ == "__main__":
    commands = {"index": index, "free-port": free_port, "outputs": outputs, "events": events,
                "workers": workers}  # fmt: skip
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    os.umask(0o022)
    commands[sys.argv[1]](*sys.argv[2:])
