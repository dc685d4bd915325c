"""Installing featurex where Spark runs: beside the platform's pyspark, never replacing it;
and with no pyspark at all, the engine works and the Spark parts say what to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
from featurex_wheel import build_wheel

ROOT = Path(__file__).parents[1]
PLATFORM_PYSPARK = "3.5.9"  # the pyspark a Databricks LTS or EMR 7 cluster already has
# A version of its own: the test venv also sees this checkout's featurex (through the shared
# site-packages below), and pip would call that one "already satisfied".
VERSION = "0.1.0+installtest"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"), VERSION)


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as whl:
        (name,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(whl.read(name).decode())
    return metadata.get_all("Requires-Dist") or []


def test_pyspark_is_an_extra_never_a_requirement(wheel: Path) -> None:
    requires = _requires(wheel)
    # Nothing pip installs for plain `featurex` names pyspark: it installs beside pyspark
    # 3.5 or 4.x, pyspark-client or databricks-connect without touching them.
    assert not [r for r in requires if r.startswith("pyspark") and "extra ==" not in r], requires
    assert 'pyspark>=3.5; extra == "spark"' in requires
    assert 'pyspark[connect]>=3.5; extra == "connect"' in requires


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_pip_install_beside_pyspark_3_5_keeps_it(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "platform"
    python = str(venv / "bin" / "python")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    pip = [sys.executable, "-m", "pip", "--python", python, "install"]
    _run([*pip, "--quiet", f"pyspark=={PLATFORM_PYSPARK}"])  # the platform's own
    # torch and the rest from this interpreter's site-packages, after the venv's own (as
    # `make setup-spark35` does): nothing big is installed again.
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    shared = [p for p in sys.path if p.endswith("site-packages")]
    Path(purelib.stdout.strip(), "shared.pth").write_text("\n".join(shared) + "\n")

    installed = _run([*pip, str(wheel)]).stdout.split("Successfully installed")[-1]
    assert f"featurex-{VERSION}" in installed and "pyspark" not in installed, installed
    # featurex[spark] asks for pyspark>=3.5: the platform's satisfies it.
    spark = _run([*pip, f"featurex[spark] @ {wheel.as_uri()}"]).stdout
    lines = [line for line in spark.splitlines() if "pyspark" in line]
    assert lines and all(line.startswith("Requirement already satisfied") for line in lines), spark

    check = "import featurex, pyspark; print(featurex.__version__, pyspark.__version__)"
    done = _run([python, "-c", check], cwd=tmp_path)  # not this checkout's featurex
    assert done.stdout.split() == [VERSION, PLATFORM_PYSPARK]
    site = Path(purelib.stdout.strip())
    assert sorted(p.name for p in site.glob("pyspark-*.dist-info")) == [
        f"pyspark-{PLATFORM_PYSPARK}.dist-info"
    ]


# A process where pyspark cannot be imported, as on a machine without it.
NO_PYSPARK = textwrap.dedent(
    """
    import importlib.abc, io, json, sys
    from contextlib import redirect_stderr

    class NoPySpark(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "pyspark" or name.startswith("pyspark."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NoPySpark())

    import featurex as fx
    from featurex import cli

    jpeg = open(sys.argv[1], "rb").read()
    features, errors = fx.FeatureExtractor(model="resnet18", weights=None).extract([jpeg])
    result = {"engine": list(features.shape), "errors": errors}
    for name, call in (("image_features", lambda: fx.image_features("content")),
                       ("ImageFeaturizer", lambda: fx.ImageFeaturizer(inputCol="content"))):
        try:
            call()
            result[name] = "no error"
        except fx.FeatureXError as exc:
            result[name] = [type(exc).__name__, str(exc), isinstance(exc, ImportError)]
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        code = cli.main(["extract", sys.argv[1], "--output", sys.argv[2], "--weights", "none"])
    result["cli"] = [code, stderr.getvalue()]
    print(json.dumps(result))
    """
)


def test_without_pyspark_the_engine_works_and_the_spark_parts_say_what_to_install(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sample = str(ROOT / "samples" / "chelsea.jpg")
    result = _run([sys.executable, "-c", NO_PYSPARK, sample, str(tmp_path / "out")], env=env)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["engine"] == [1, 512] and report["errors"] == [None]
    install = 'pip install "featurex[spark]" for local Spark'
    for name in ("image_features", "ImageFeaturizer"):
        kind, message, is_import_error = report[name]
        assert kind == "MissingDependencyError" and is_import_error, report[name]
        assert message.startswith(f"featurex.{name} needs pyspark (No module named 'pyspark')")
        assert install in message and "\n" not in message
    code, stderr = report["cli"]
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert (
        stderr.startswith("featurex: error: featurex extract needs pyspark") and install in stderr
    )
    assert not (tmp_path / "out").exists()
