"""Model families beyond torchvision: Hugging Face (CLIP, DINOv2), timm and open_clip.

Offline: tiny random models saved to temp folders the way users save them (save_pretrained,
state_dicts), loaded through featurex's real loading code, compared with each library's own
pipeline run by hand (tests/families.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from families import (
    OPEN_CLIP_ARCH,
    TIMM_ARCH,
    fake_hub_repo,
    hf_reference,
    open_clip_reference,
    save_open_clip_state,
    save_timm_state,
    save_tiny_clip,
    save_tiny_dinov2,
    timm_reference,
)
from images import encode, jpeg, photo
from models_for_tests import assert_close, worker_cache_report

import featurex as fx
from featurex.errors import ConfigError, MissingDependencyError

ROOT = Path(__file__).parent.parent
IMAGES = [jpeg(200, 150, 1), jpeg(120, 260, 2), encode(photo(90, 90, 3), "PNG"), jpeg(64, 48, 4)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {
        "clip": save_tiny_clip(root / "clip"),
        "dinov2": save_tiny_dinov2(root / "dinov2"),
        "timm": save_timm_state(root / "timm.safetensors"),
        "open_clip": save_open_clip_state(root / "open_clip.pt"),
    }


def _models(saved: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each family's featurex arguments and its hand-run reference features for IMAGES."""
    return {
        "clip": {"model": f"hf:{saved['clip']}", "weights": "DEFAULT"},
        "dinov2": {"model": f"hf:{saved['dinov2']}", "weights": "DEFAULT"},
        "timm": {"model": f"timm:{TIMM_ARCH}", "weights": str(saved["timm"])},
        "open_clip": {"model": f"open_clip:{OPEN_CLIP_ARCH}", "weights": str(saved["open_clip"])},
    }


def _reference(name: str, saved: dict[str, Path]) -> np.ndarray:
    if name in ("clip", "dinov2"):
        return hf_reference(saved[name], IMAGES)
    if name == "timm":
        return timm_reference(saved["timm"], IMAGES)
    return open_clip_reference(saved["open_clip"], IMAGES)


@pytest.mark.parametrize("name", ["clip", "dinov2", "timm", "open_clip"])
def test_features_equal_the_library_pipeline(saved: dict[str, Path], name: str) -> None:
    args = _models(saved)[name]
    extractor = fx.FeatureExtractor(**args, device="cpu")
    features, errors = extractor.extract([*IMAGES, b"not an image"])
    assert errors[:4] == [None] * 4 and errors[4] is not None
    assert np.isnan(features[4]).all()
    assert_close(features[:4], _reference(name, saved))


def test_clip_features_are_the_projected_image_embedding_and_the_text_tower_is_dropped(
    saved: dict[str, Path],
) -> None:
    # Eager, to look inside (the default fp32 model is a frozen graph of the pruned one).
    extractor = fx.FeatureExtractor(f"hf:{saved['clip']}", device="cpu", optimize=False)
    assert extractor.dim == 16  # projection_dim, not the vision hidden size (32)
    inner = extractor.loaded.module.model
    kept = {name for name, child in inner.named_children() if child is not None}
    assert kept == {"vision_model", "visual_projection"}


def test_random_init_is_seeded_from_the_config(saved: dict[str, Path]) -> None:
    one = fx.FeatureExtractor(f"hf:{saved['dinov2']}", weights=None, device="cpu", seed=1)
    two = fx.FeatureExtractor(f"hf:{saved['dinov2']}", weights=None, device="cpu", seed=1)
    other = fx.FeatureExtractor(f"hf:{saved['dinov2']}", weights=None, device="cpu", seed=2)
    assert np.array_equal(one.extract(IMAGES)[0], two.extract(IMAGES)[0])
    assert not np.allclose(one.extract(IMAGES)[0], other.extract(IMAGES)[0])
    trained = fx.FeatureExtractor(f"hf:{saved['dinov2']}", device="cpu").extract(IMAGES)[0]
    assert not np.allclose(one.extract(IMAGES)[0], trained)


@pytest.mark.parametrize("name", ["clip", "dinov2", "timm", "open_clip", "torchvision"])
def test_normalize_gives_unit_rows(saved: dict[str, Path], name: str) -> None:
    args = {"model": "resnet18", "weights": None} if name == "torchvision" else _models(saved)[name]
    raw = fx.FeatureExtractor(**args, device="cpu").extract(IMAGES)[0]
    unit, errors = fx.FeatureExtractor(**args, device="cpu", normalize=True).extract(
        [*IMAGES, None]
    )
    assert np.allclose(np.linalg.norm(unit[:4], axis=1), 1.0, atol=1e-6)
    assert_close(unit[:4], raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6)
    assert np.isnan(unit[4]).all() and errors[4] is not None


def test_families_through_spark_equal_their_references(
    spark: Any, saved: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, data in enumerate(IMAGES):
        (folder / f"img{i}.bin").write_bytes(data)
    (folder / "img9.bin").write_bytes(b"\x89PNG broken")
    files = spark.read.format("binaryFile").load(str(folder)).repartition(2)
    # One job per family: the two Python workers serve them all in turn (several pandas
    # UDFs in one query would each take Python workers of their own).
    for name, args in _models(saved).items():
        col = fx.image_features("content", **args, device="cpu", with_errors=True)
        rows = files.select("path", col.alias("r")).orderBy("path").collect()
        assert [r.path.rsplit("/", 1)[1] for r in rows] == [f"img{i}.bin" for i in (0, 1, 2, 3, 9)]
        got = np.array([r.r.features for r in rows[:4]], dtype=np.float32)
        assert_close(got, _reference(name, saved))
        assert rows[4].r.features is None and "not an image" in rows[4].r.error
    unit = fx.image_features("content", **_models(saved)["clip"], device="cpu", normalize=True)
    rows = files.select("path", unit.alias("unit")).orderBy("path").collect()
    norms = np.linalg.norm(np.array([r.unit for r in rows[:4]]), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-6) and rows[4].unit is None


def test_one_hf_load_per_worker_across_two_jobs(spark: Any, saved: dict[str, Path]) -> None:
    config = fx.ExtractorConfig(model=f"hf:{saved['dinov2']}", device="cpu", seed=5)
    col = fx.image_features("content", model=f"hf:{saved['dinov2']}", device="cpu", seed=5)
    df = spark.createDataFrame([(b,) for b in IMAGES * 3], "content binary").repartition(6)
    for _ in range(2):  # two jobs, 6 tasks each
        rows = df.select(col.alias("f")).collect()
        assert len(rows) == 12 and all(len(r.f) == 32 for r in rows)
    # Many small tasks: Spark hands out idle Python workers in turn, so every worker in the
    # pool (earlier tests' queries may have grown it past two) reports.
    reports = (
        spark.range(0, 64, numPartitions=64)
        .mapInPandas(worker_cache_report(config), "report string")
        .collect()
    )
    by_pid = {json.loads(r.report)["pid"]: json.loads(r.report) for r in reports}
    assert all(r["loads"] <= 1 for r in by_pid.values()), by_pid
    assert sum(r["loads"] for r in by_pid.values()) >= 1
    # Every task looked the model up once: a load, or a hit on an earlier task's load.
    assert sum(r["hits"] for r in by_pid.values()) == 12, by_pid


def test_an_equal_config_shares_the_load_and_a_changed_folder_does_not(
    tmp_path: Path, saved: dict[str, Path]
) -> None:
    folder = save_tiny_dinov2(tmp_path / "dinov2", seed=3)
    first = fx.ExtractorConfig(model=f"hf:{folder}")
    assert fx.ExtractorConfig(model=f"hf:{folder}").key == first.key
    assert fx.ExtractorConfig(model=f"hf:{folder}", normalize=True).key == first.key
    os.utime(folder / "model.safetensors", ns=(1, 1))  # the weights file replaced
    assert fx.ExtractorConfig(model=f"hf:{folder}").key != first.key


def test_image_featurizer_with_an_hf_model_saves_and_loads(
    spark: Any, saved: dict[str, Path], tmp_path: Path
) -> None:
    from pyspark.ml import Pipeline, PipelineModel

    featurizer = fx.ImageFeaturizer(
        inputCol="content", model=f"hf:{saved['clip']}", device="cpu", normalize=True
    )
    df = spark.createDataFrame([(b,) for b in IMAGES], "content binary")
    fitted = Pipeline(stages=[featurizer]).fit(df)
    fitted.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    stage = loaded.stages[0]
    assert stage.getModel() == f"hf:{saved['clip']}" and stage.getNormalize() is True
    got = np.array([r.features for r in loaded.transform(df).collect()], dtype=np.float32)
    want = hf_reference(saved["clip"], IMAGES)
    assert_close(got, want / np.linalg.norm(want, axis=1, keepdims=True))


@pytest.mark.parametrize(
    ("module", "model", "extra"),
    [("transformers", "hf:facebook/dinov2-small", "hf"), ("timm", "timm:resnet50", "timm"),
     ("open_clip", "open_clip:ViT-B-32", "open_clip")],
)  # fmt: skip
def test_a_missing_extra_fails_at_the_call_with_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, module: str, model: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when it is absent
    with pytest.raises(
        MissingDependencyError,
        match=rf'needs the {module!r} package.*pip install "featurex\[{extra}\]"',
    ):
        fx.image_features("content", model=model)


def test_bad_names_fail_on_the_driver_naming_the_value_and_the_fix(tmp_path: Path) -> None:
    cases = [
        ({"model": "timm:resnt50"}, r"unknown timm model 'resnt50': did you mean timm:resnet50"),
        ({"model": "open_clip:ViT-B-31"}, r"unknown open_clip architecture 'ViT-B-31': did you mean open_clip:ViT-B-32"),
        ({"model": "open_clip:ViT-B-32", "weights": "laion9"}, r"unknown pretrained tag 'laion9' for open_clip:ViT-B-32: expected one of 'openai'"),
        ({"model": f"hf:{tmp_path}"}, r"has no config.json: write it with model.save_pretrained\(folder\)"),
        ({"model": f"hf:{tmp_path / 'missing'}"}, r"no such folder"),
        ({"model": "hf:not a repo!"}, r"neither a local folder nor a repo id"),
        ({"model": "hf:"}, r"names no model after 'hf:'"),
        ({"model": "timm:test_vit", "weights": "IMAGENET1K_V1"}, r"weights='IMAGENET1K_V1' for timm:test_vit: expected 'DEFAULT'"),
        ({"model": "resnet18", "batchsize": 4}, r"unknown option 'batchsize': did you mean 'batch_size'"),
    ]  # fmt: skip
    for kwargs, message in cases:
        model = kwargs.pop("model")
        with pytest.raises(ConfigError, match=message):
            fx.image_features("content", model=model, **kwargs)


def test_an_hf_folder_without_safetensors_or_of_a_text_model_is_refused(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    folder = save_tiny_clip(tmp_path / "clip")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"has no .safetensors weights.*does not unpickle"):
        fx.ExtractorConfig(model=f"hf:{folder}")
    fx.ExtractorConfig(model=f"hf:{folder}", weights=None)  # random init needs no weights
    text = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=37, vocab_size=99)).save_pretrained(text)  # fmt: skip
    (text / "preprocessor_config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"is a BertModel, which takes no images"):
        fx.ExtractorConfig(model=f"hf:{text}")


# The Hugging Face Hub reads HF_HUB_OFFLINE and HF_HUB_CACHE at import: a fresh process.
HUB_SCRIPT = r"""
import json, sys
import featurex as fx
from featurex.errors import FeatureXError
out = {}
try:
    config = fx.ExtractorConfig(model=sys.argv[1])
    out["source"] = [config.source.model, config.source.revision, config.source.identity]
    features, errors = fx.FeatureExtractor(sys.argv[1], device="cpu").extract([open(sys.argv[2], "rb").read()])
    out["features"] = features[0].tolist()
except FeatureXError as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def _offline(*args: str, cache: Path) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", HUB_SCRIPT, *args], env=env, text=True,
                          capture_output=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_a_cached_repo_works_offline_pinned_to_its_commit_and_an_uncached_one_says_why(
    tmp_path: Path, saved: dict[str, Path]
) -> None:
    cache = tmp_path / "hub"
    commit = fake_hub_repo(cache, "featurex-tests/tiny-clip", saved["clip"])
    image = tmp_path / "one.jpg"
    image.write_bytes(IMAGES[0])
    got = _offline("hf:featurex-tests/tiny-clip", str(image), cache=cache)
    assert got["source"] == [
        "featurex-tests/tiny-clip",
        commit,
        f"featurex-tests/tiny-clip@{commit}",
    ]
    assert_close(np.array([got["features"]], np.float32), hf_reference(saved["clip"], IMAGES[:1]))

    missing = _offline("hf:featurex-tests/not-cached", str(image), cache=cache)
    assert missing["error"].startswith(
        "WeightsUnavailableError: cannot resolve hf:featurex-tests/not-cached"
    )
    assert "\n" not in missing["error"]
    assert "HF_HUB_OFFLINE=1" in missing["error"] and "save_pretrained(folder)" in missing["error"]


def test_info_says_whether_an_hf_repo_is_cached(tmp_path: Path, saved: dict[str, Path]) -> None:
    cache = tmp_path / "hub"
    fake_hub_repo(cache, "featurex-tests/tiny-clip", saved["clip"])
    partial = tmp_path / "configs-only"
    partial.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (partial / name).write_bytes((saved["clip"] / name).read_bytes())
    fake_hub_repo(cache, "featurex-tests/configs-only", partial)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    featurex = [sys.executable, "-m", "featurex", "info", "--json", "--model"]
    for repo, cached in (("tiny-clip", True), ("configs-only", False), ("absent", False)):
        done = subprocess.run([*featurex, f"hf:featurex-tests/{repo}"], env=env, text=True,
                              capture_output=True, timeout=300, check=False)  # fmt: skip
        # Weights that are not here are "not cached", as for every family: exit 0.
        assert done.returncode == 0, done.stderr
        weights = json.loads(done.stdout)["weights"]
        assert weights["cached"] is cached, weights
        assert weights["status"].startswith("not cached") is not cached
        if repo != "absent":
            assert weights["weights"].startswith(f"featurex-tests/{repo}@")
    # A repo in no cache has no commit to name; the status says why.
    assert weights["weights"] == "DEFAULT"
    assert "cannot resolve hf:featurex-tests/absent" in weights["status"]


def test_cli_extract_with_an_hf_model_and_normalize(tmp_path: Path, saved: dict[str, Path]) -> None:
    import pyarrow.parquet as pq

    images = tmp_path / "in"
    images.mkdir()
    for i, data in enumerate(IMAGES):
        (images / f"{i}.jpg").write_bytes(data)
    out = tmp_path / "out.parquet"
    command = [sys.executable, "-m", "featurex", "extract", str(images), "--normalize",
               "--model", f"hf:{saved['dinov2']}", "--master", "local[1]", "-q"]  # fmt: skip
    # Without the switches the CLI sets in a process of its own (tests call it in this one).
    switches = ("FEATUREX_LOG_LEVEL", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")
    env = {k: v for k, v in os.environ.items() if k not in switches}
    done = subprocess.run([*command, "--output", str(out)], env=env, text=True,
                          capture_output=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-2:][0] == "featurex: 4 files found = 4 rows"
    assert done.stdout.splitlines()[-1].startswith("featurex: 4 images, 0 failed")
    # Quiet workers: transformers' progress bars and notices stay out of the job's output...
    assert "Loading weights" not in done.stderr and "[transformers]" not in done.stderr
    # ...unless asked for, with featurex's own log lines too: what a worker does at its
    # start (quiet_libraries), then the load, in a process without Spark (the job's output
    # above shows a worker's stderr reaches it).
    model = f"hf:{saved['dinov2']}"
    script = (
        "from featurex._logs import quiet_libraries; quiet_libraries()\n"
        f"import featurex as fx; fx.FeatureExtractor({model!r}, device='cpu').loaded\n"
    )
    quiet_cache = {
        "FEATUREX_LOG_LEVEL": "info",
        "FEATUREX_CACHE_DIR": "",
    }  # no graph cache: it builds
    loud = subprocess.run([sys.executable, "-c", script], text=True, capture_output=True,
                          env={**env, **quiet_cache}, timeout=300, check=False)  # fmt: skip
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "Loading weights" in loud.stderr and "featurex INFO: featurex loaded" in loud.stderr
    table = pq.read_table(out).to_pandas().sort_values("path")
    features = np.stack(table["features"].to_numpy()).astype(np.float32)
    want = hf_reference(saved["dinov2"], IMAGES)
    assert_close(features, want / np.linalg.norm(want, axis=1, keepdims=True))


def test_an_unresolvable_repo_is_refused_by_the_cli_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    (tmp_path / "in").mkdir()
    command = [sys.executable, "-m", "featurex", "extract", str(tmp_path / "in"), "--output",
               str(tmp_path / "out"), "--model", "hf:facebook/dinov2-small"]  # fmt: skip
    for weights in ("DEFAULT", "none"):
        done = subprocess.run([*command, "--weights", weights], env=env, text=True,
                              capture_output=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 3, done.stderr
        assert done.stderr.count("\n") == 1
        assert done.stderr.startswith(
            "featurex: error: cannot resolve hf:facebook/dinov2-small: it is not in the Hugging "
            "Face cache, and HF_HUB_OFFLINE=1 is set, so the Hub was not asked"
        ), done.stderr
        # What is true: offline was asked for, and random init needs the config too.
        assert "cannot be reached" not in done.stderr and "set HF_HUB_OFFLINE" not in done.stderr
        assert "--model hf:/path/to/folder" in done.stderr and "weights=None" not in done.stderr
        assert ("(--weights none needs its config.json too)" in done.stderr) == (weights == "none")
        assert "pass --weights none" not in done.stderr


def test_open_clip_default_is_the_first_listed_tag() -> None:
    import open_clip

    config = fx.ExtractorConfig(model="open_clip:ViT-B-32", weights="DEFAULT")
    assert config.weights == open_clip.list_pretrained_tags_by_model("ViT-B-32")[0] == "openai"


# Two processes on one machine load the same open_clip tag at once. open_clip's URL
# download writes straight into its cache file, so without featurex's lock both would fetch
# and write it together. The weights come from a slow server on loopback.
DOWNLOAD_SCRIPT = r"""
import json, sys
import open_clip
from open_clip.pretrained import _PRETRAINED, _pcfg
_PRETRAINED.setdefault(sys.argv[1], {})["fxtest"] = _pcfg(url=sys.argv[2])
import featurex as fx
features, _ = fx.FeatureExtractor(f"open_clip:{sys.argv[1]}", weights="fxtest", device="cpu").extract([open(sys.argv[3], "rb").read()])
print(json.dumps(features[0].tolist()))
"""


def test_workers_downloading_the_same_weights_at_once_fetch_them_once(
    tmp_path: Path, saved: dict[str, Path]
) -> None:
    import http.server
    import threading
    import time

    payload = saved["open_clip"].read_bytes()
    gets: list[str] = []

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            gets.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            for i in range(0, len(payload), len(payload) // 8 + 1):  # ~2 s in all
                self.wfile.write(payload[i : i + len(payload) // 8 + 1])
                time.sleep(0.25)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/weights/open_clip_model.pt"
    image = tmp_path / "one.jpg"
    image.write_bytes(IMAGES[0])
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "no_proxy": "*"}
    command = [sys.executable, "-c", DOWNLOAD_SCRIPT, OPEN_CLIP_ARCH, url, str(image)]
    try:
        runs = [subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE) for _ in range(2)]  # fmt: skip
        outputs = [run.communicate(timeout=600) for run in runs]
    finally:
        server.shutdown()
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
    assert gets == ["/weights/open_clip_model.pt"]  # fetched once, by whichever came first
    cached = tmp_path / ".cache" / "clip" / "open_clip_model.pt"
    assert cached.read_bytes() == payload
    want = open_clip_reference(saved["open_clip"], IMAGES[:1])
    for out, _ in outputs:
        assert_close(np.array([json.loads(out.splitlines()[-1])], np.float32), want)


def test_transformers_run_traced_in_fp32_and_eager_with_cast_weights_in_bf16(
    saved: dict[str, Path],
) -> None:
    import torch

    from featurex.models.runtime import autocast_dtype

    for name in ("clip", "dinov2"):  # traced, and the graph passed the check against eager
        fp32 = fx.FeatureExtractor(f"hf:{saved[name]}", device="cpu")
        assert isinstance(fp32.loaded.module, torch.jit.ScriptModule)
    if autocast_dtype("bf16", torch.device("cpu")) is None:
        pytest.skip("this CPU has no bf16: the precision runs as fp32")
    bf16 = fx.FeatureExtractor(f"hf:{saved['clip']}", device="cpu", precision="bf16")
    module = bf16.loaded.module
    assert not isinstance(module, torch.jit.ScriptModule)
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and {m.weight.dtype for m in linears} == {torch.bfloat16}
    # Cast once, computed as autocast computes it: the same numbers as transformers under
    # torch.autocast, by hand.
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(saved["clip"])
    model = AutoModel.from_pretrained(saved["clip"]).eval()
    pixels = processor(images=[_pil_rgb(b) for b in IMAGES], return_tensors="pt")["pixel_values"]
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        want = model.get_image_features(pixel_values=pixels).pooler_output.float().numpy()
    assert_close(bf16.extract(IMAGES)[0], want, rtol=1e-6)


@pytest.mark.parametrize(
    ("family", "swiglu"), [("Dinov2", False), ("Dinov2", True), ("Dinov2WithRegisters", False)]
)
def test_folding_dinov2_layer_scales_keeps_the_function(family: str, swiglu: bool) -> None:
    import torch
    import transformers

    from featurex.models.hf import ImageEmbedder, fold_layer_scales

    torch.manual_seed(0)
    config = getattr(transformers, f"{family}Config")(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        image_size=32, patch_size=8, use_swiglu_ffn=swiglu,
    )  # fmt: skip
    model = ImageEmbedder(getattr(transformers, f"{family}Model")(config).eval())
    with torch.no_grad():
        for layer in model.modules():  # trained-like: the init has unit scales, zero biases
            if hasattr(layer, "lambda1"):
                layer.lambda1.uniform_(0.05, 2.0)
            if isinstance(layer, torch.nn.Linear):
                layer.bias.normal_()
        pixels = torch.randn(3, 3, 32, 32)
        want = model(pixels)
        fold_layer_scales(model)
        assert not any(hasattr(m, "lambda1") for m in model.modules())
        assert_close(model(pixels).numpy(), want.numpy(), rtol=1e-5)
        fold_layer_scales(model)  # a second time: nothing left to fold
        assert_close(model(pixels).numpy(), want.numpy(), rtol=1e-5)


def test_a_rewrite_that_fails_halfway_leaves_the_model_as_built(
    saved: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import featurex.models.hf as hf

    def halfway(module: torch.nn.Module) -> None:
        linear = next(m for m in module.modules() if isinstance(m, torch.nn.Linear))
        with torch.no_grad():
            linear.weight.mul_(3.0)
        raise RuntimeError("an unknown layout")

    monkeypatch.setattr(hf, "fold_layer_scales", halfway)
    extractor = fx.FeatureExtractor(f"hf:{saved['dinov2']}", device="cpu", seed=11)
    assert isinstance(extractor.loaded.module, torch.jit.ScriptModule)  # traced, unfolded
    assert_close(extractor.extract(IMAGES)[0], hf_reference(saved["dinov2"], IMAGES))


def _pil_rgb(data: bytes) -> Any:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")
