"""Hugging Face transformers (`hf:<repo id or local folder>[@revision]`): CLIP, SigLIP,
DINOv2 and any image model `AutoModel` builds.

Features: `get_image_features` where the model has it (CLIP, SigLIP: the image-text
embedding), else `pooler_output` (DINOv2: the layer-normed CLS token), else the token mean of
`last_hidden_state`. Preprocessing: the repo's `AutoImageProcessor`, as transformers picks it.
Weights load from safetensors only, and no remote code runs (`trust_remote_code` stays off).
A repo id is pinned on the driver to the commit its revision names, so that every worker
loads the same files.
"""

from __future__ import annotations

import contextlib
import glob
import inspect
import os
import re
from typing import Any, cast

import torch
from torch import nn

from .._types import ModelFactory
from .._words import opt
from ..decode.preprocess import Interpolation, Preprocessing, three_channels
from ..errors import ConfigError, WeightsUnavailableError, first_line
from .base import Built, Source, WeightsStatus, import_optional, seeded
from .weights import download_lock, folder_version, hub_cached

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
# What a worker needs from a repo: configs (model, image processor) and the weights.
_FILES = ["*.json", "*.safetensors"]


def _offline_fix(config_cached: bool) -> str:
    """What to do without the Hub, offering only what can work here: HF_HUB_OFFLINE=1 where
    it is not set already, a random init only where the repo's config is in the cache."""
    from huggingface_hub import constants

    fixes = [
        "use a local folder (model.save_pretrained(folder) and processor.save_pretrained("
        f"folder), then {opt('model', 'hf:/path/to/folder')})"
    ]
    if constants.HF_HUB_OFFLINE:
        fixes.append("download the repo once where the Hub can be reached")
    else:
        fixes.append("set HF_HUB_OFFLINE=1 to use a repo already in the Hugging Face cache")
    if config_cached:
        fixes.append(f"pass {opt('weights', None)} for a random init from its config")
    return f"Offline? {', '.join(fixes[:-1])} or {fixes[-1]}"


def _transformers() -> Any:
    return import_optional("transformers", "hf", "hf")


def _is_folder(name: str) -> bool:
    return os.path.isdir(os.path.expanduser(name)) or name.startswith(("/", ".", "~"))


class HuggingFace:
    name: str = "hf"
    extra: str | None = "hf"

    def resolve(self, model: str | ModelFactory, weights: str | None, trust: bool) -> Source:
        assert isinstance(model, str)
        _transformers()
        if weights not in (None, "DEFAULT"):
            raise ConfigError(
                f"{opt('weights', weights)} for hf:{model}: expected 'DEFAULT' (the repo's or "
                f"folder's own weights) or {opt('weights', None)} (a seeded random init from its "
                f"config); pick a revision with {opt('model', 'hf:<repo id>@<revision>')}"
            )
        if _is_folder(model):
            folder = os.path.abspath(os.path.expanduser(model))
            _check_folder(folder, weights)
            source = Source(self.name, folder, weights, folder_version(folder))
            config_dir = folder
        else:
            repo, _, revision = model.partition("@")
            if not _REPO_ID.match(repo):
                raise ConfigError(
                    f"hf:{model} is neither a local folder nor a repo id such as "
                    f"'facebook/dinov2-small' (optionally @revision)"
                )
            config_file = _hub_file(repo, "config.json", revision or None, weights)
            # The snapshot folder is named after the commit: pin it for every worker.
            commit = os.path.basename(os.path.dirname(config_file))
            _hub_file(repo, "preprocessor_config.json", commit, weights)
            source = Source(self.name, repo, weights, f"{repo}@{commit}", revision=commit)
            config_dir = os.path.dirname(config_file)
        _check_image_model(config_dir, f"hf:{model}")
        return source

    def build(self, source: Source, seed: int) -> Built:
        transformers = _transformers()
        folder = self._local(source)
        if source.weights is None:
            config = transformers.AutoConfig.from_pretrained(folder)
            with seeded(seed):
                model = transformers.AutoModel.from_config(config)
        else:
            model = transformers.AutoModel.from_pretrained(folder, use_safetensors=True)
        model = model.float()  # fp16 weights too: the precision option decides the compute
        processor = transformers.AutoImageProcessor.from_pretrained(folder)
        embedder = ImageEmbedder(model.eval())
        prunable = model if embedder.how == "image_features" else None
        # Traced in fp32 only (see `Built`): CLIP ViT-B/16 1.28x, DINOv2-S 1.26x eager.
        transform = ProcessorTransform(processor)
        return Built(
            embedder,
            transform,
            optimize=True,
            optimize_reduced=False,
            prunable=prunable,
            trace_rewrite=fold_layer_scales,
        )

    def _local(self, source: Source) -> str:
        """The folder to load from: the user's, or the pinned snapshot in the HF cache.

        A commit's files never change: where the cache holds what the model needs (configs,
        and safetensors weights unless it is a random init), the Hub is not asked."""
        assert isinstance(source.model, str)
        if source.revision is None:
            return source.model
        from huggingface_hub import snapshot_download

        patterns = _FILES if source.weights is not None else ["*.json"]
        cached = _cached_snapshot(source.model, source.revision, source.weights is not None)
        if cached is not None:
            return cached
        try:
            # One HEAD first: without a network, snapshot_download retries for about 20 s.
            _ask_hub(source.model, "config.json", source.revision, cached_will_do=False)
            with download_lock(source.identity):
                folder = str(
                    snapshot_download(
                        source.model, revision=source.revision, allow_patterns=patterns
                    )
                )
            if source.weights is not None and not glob.glob(os.path.join(folder, "*.safetensors")):
                # Offline, snapshot_download answers with the cached folder, complete or not.
                raise FileNotFoundError("the cache holds its configs, not its .safetensors weights")
        except Exception as exc:
            why = (
                f"the Hub cannot be reached: {_said(exc)}"
                if isinstance(exc, _Unreachable)
                else _said(exc)
            )
            raise WeightsUnavailableError(
                f"cannot download hf:{source.model} at {source.revision} ({why}). "
                f"{_offline_fix(config_cached=True)}"
            ) from exc
        return folder

    def weights_status(self, source: Source) -> WeightsStatus:
        assert isinstance(source.model, str)
        if source.revision is None:
            return WeightsStatus(source.model, None, source.model, "local folder")
        if source.weights is None:
            return WeightsStatus("none", None, None, f"random init (config of {source.identity})")
        names = ("model.safetensors", "model.safetensors.index.json")
        path = hub_cached(source.model, names, source.revision)
        if path is not None:
            folder = os.path.dirname(path)
            return WeightsStatus(source.identity, True, folder, f"cached at {folder}")
        return WeightsStatus(
            source.identity, False, None, "not cached (would download from the Hugging Face Hub)"
        )

    def fetch(self, source: Source) -> None:
        self._local(source)


class ImageEmbedder(nn.Module):
    """pixel_values -> one feature row per image, by the documented rule."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.how = "image_features" if hasattr(model, "get_image_features") else "forward"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.how == "image_features":
            out = cast(Any, self.model).get_image_features(pixel_values=pixel_values)
            # transformers 5 returns an output whose pooler_output is the embedding.
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        out = self.model(pixel_values=pixel_values)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled  # type: ignore[no-any-return]
        hidden: torch.Tensor = out.last_hidden_state
        return hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden.mean(dim=1)


def fold_layer_scales(module: nn.Module) -> None:
    """Fold DINOv2's layer scales into the Linear layers before them: `(x W^T + b) * s` is
    `x (s W)^T + s b`.

    oneDNN Graph cannot fuse a Linear followed by that multiply (torch 2.14:
    "vector::_M_range_check", so DINOv2 ran unfused); folded, the whole graph fuses: DINOv2-S,
    one thread, batch 4, CPU time per image 136 -> 121 ms (frozen unfused -> fused; eager
    153), measured. Before tracing only: folded into the weights, a small scale would cost
    int8's per-tensor weight quantization its precision. A block whose Linear layers have
    other names than these is left as it is.
    """
    for block in list(module.modules()):
        if type(block).__name__ not in _LAYER_SCALED:
            continue
        for paths, name in ((_ATTENTION_OUT, "layer_scale1"), (_MLP_OUT, "layer_scale2")):
            linear = _linear(block, paths)
            scale = getattr(getattr(block, name, None), "lambda1", None)
            if linear is None or not isinstance(scale, torch.Tensor):
                continue  # another layout, or folded already: this branch stays as it is
            with torch.no_grad():
                linear.weight.mul_(scale[:, None])
                if linear.bias is not None:
                    linear.bias.mul_(scale)
            setattr(block, name, nn.Identity())


def _linear(block: nn.Module, paths: tuple[str, ...]) -> nn.Linear | None:
    for path in paths:
        try:
            found = block.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(found, nn.Linear):
            return found
    return None


# Blocks whose forward is `x + layer_scale1(attention(...))` then `x + layer_scale2(mlp(...))`,
# each branch ending in one of these Linear layers (transformers renamed them in 5.x).
_LAYER_SCALED = {"Dinov2Layer", "Dinov2WithRegistersLayer"}
_ATTENTION_OUT = ("attention.o_proj", "attention.output.dense")
_MLP_OUT = ("mlp.fc2", "mlp.down_proj", "mlp.weights_out")


class ProcessorTransform:
    """An image processor as a per-image transform: RGB PIL image -> (3, H, W) float32,
    and the same preprocessing as data (`preprocessing`), where featurex can read it."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        size = getattr(processor, "size", None) or {}
        # An aspect-preserving resize makes the short side this; the elongation check of
        # `decode.prepare` needs it. A fixed height x width resize bounds its own output.
        edge = size.get("shortest_edge") if getattr(processor, "do_resize", True) else None
        self.resize_size: int | None = edge if isinstance(edge, int) else None
        self.preprocessing = describe_processor(processor)

    def __call__(self, image: Any) -> torch.Tensor:
        pixels: torch.Tensor = self.processor(images=image, return_tensors="pt")["pixel_values"]
        return pixels[0]

    def __repr__(self) -> str:
        return f"ProcessorTransform({type(self.processor).__name__})"


# PIL's resampling filters, as transformers' configs name them (PILImageResampling).
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
# The steps of transformers' torchvision backend that the description stands for.
_BACKEND_STEPS = ("process_image", "_preprocess", "resize", "center_crop", "rescale_and_normalize")


def describe_processor(processor: Any) -> Preprocessing | None:
    """A transformers 5 image processor as data: resize (short side or height x width),
    center crop, rescale and normalize, done with torch's antialiased resize on uint8
    tensors as its torchvision backend does. None for a processor that does more (padding,
    its own steps, the PIL backend): it then runs as it is, on the CPU."""
    try:
        from transformers.image_processing_backends import TorchvisionBackend
    except ImportError:
        return None
    if not isinstance(processor, TorchvisionBackend):
        return None
    p: Any = processor
    own = [
        s for s in _BACKEND_STEPS if getattr(type(p), s, None) is not getattr(TorchvisionBackend, s)
    ]
    interpolation = _RESAMPLE.get(int(getattr(p, "resample", 2) or 2))
    if own or getattr(p, "do_pad", None) or interpolation is None:
        return None
    resize: int | tuple[int, int] | None = None
    if p.do_resize:
        size = p.size
        if size.shortest_edge and not size.longest_edge:
            resize = int(size.shortest_edge)
        elif size.height and size.width and not (size.shortest_edge or size.longest_edge):
            resize = (int(size.height), int(size.width))
        else:
            return None
    crop = (int(p.crop_size.height), int(p.crop_size.width)) if p.do_center_crop else None
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if p.do_normalize:
        mean, std = three_channels(p.image_mean), three_channels(p.image_std)
    return Preprocessing(
        resize=resize,
        crop=crop,
        mean=mean,
        std=std,
        interpolation=cast(Interpolation, interpolation),
        resampler="tensor",
        crop_rounding="floor",
        divisor=1.0 / float(p.rescale_factor) if p.do_rescale else 1.0,
    )


def _check_folder(folder: str, weights: str | None) -> None:
    if not os.path.isdir(folder):
        raise ConfigError(f"hf:{folder}: no such folder")
    needed = {
        "config.json": "model.save_pretrained(folder)",
        "preprocessor_config.json": "the image processor's processor.save_pretrained(folder)",
    }
    for name, how in needed.items():
        if not os.path.isfile(os.path.join(folder, name)):
            raise ConfigError(f"hf:{folder} has no {name}: write it with {how}")
    if weights is not None and not glob.glob(os.path.join(folder, "*.safetensors")):
        raise ConfigError(
            f"hf:{folder} has no .safetensors weights, and featurex does not unpickle "
            f"pytorch_model.bin: save them with model.save_pretrained(folder) (safetensors is "
            f"its default), or pass {opt('weights', None)} for a random init"
        )


def _said(exc: BaseException) -> str:
    """An error's first line without its closing period: featurex's own sentence follows."""
    return first_line(exc).rstrip(". ")


def _cached_snapshot(repo: str, commit: str, weights: bool) -> str | None:
    """The cache's folder of a repo at a commit, if it holds the configs (and, with
    `weights`, safetensors weights); None otherwise."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo, "config.json", revision=commit)
    if not isinstance(config, str):
        return None
    folder = os.path.dirname(config)
    needed = os.path.isfile(os.path.join(folder, "preprocessor_config.json"))
    if weights:
        needed = needed and bool(glob.glob(os.path.join(folder, "*.safetensors")))
    return folder if needed else None


def _hub_file(repo: str, filename: str, revision: str | None, weights: str | None) -> str:
    """A config file of a Hub repo at a revision, from the cache or downloaded; one-line
    errors that say what is true (random init needs these files too).

    A random init needs the config alone: a cached one is used without asking the Hub.
    Otherwise the Hub is asked once (which commit the revision names now); where it cannot
    be reached the cache answers, or the error comes at once: huggingface_hub itself would
    retry for about 20 s first.
    """
    from huggingface_hub import constants, errors, hf_hub_download

    where = f"hf:{repo}" + (f"@{revision}" if revision else "")
    still = f" ({opt('weights', None)} needs its {filename} too)" if weights is None else ""
    try:
        if weights is None or constants.HF_HUB_OFFLINE:
            with contextlib.suppress(errors.LocalEntryNotFoundError):
                return str(
                    hf_hub_download(repo, filename, revision=revision, local_files_only=True)
                )
        _ask_hub(repo, filename, revision)
        return str(hf_hub_download(repo, filename, revision=revision))
    except errors.RevisionNotFoundError as exc:
        raise ConfigError(f"{where}: no such revision ({first_line(exc)})") from exc
    except errors.RepositoryNotFoundError as exc:  # also a gated or private repo
        raise ConfigError(
            f"{where}: no such repo, or it is private or gated (log in with `hf auth login`)"
        ) from exc
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, _Unreachable) as exc:
        why = (
            "HF_HUB_OFFLINE=1 is set, so the Hub was not asked"
            if constants.HF_HUB_OFFLINE
            else f"the Hub cannot be reached ({_said(exc)})"
        )
        raise WeightsUnavailableError(
            f"cannot resolve {where}: it is not in the Hugging Face cache, and {why}{still}. "
            f"{_offline_fix(config_cached=False)}"
        ) from exc
    except errors.EntryNotFoundError as exc:  # on the Hub (the local case is caught above)
        raise ConfigError(f"{where} has no {filename}: is it an image model?") from exc
    except OSError as exc:
        raise WeightsUnavailableError(
            f"cannot resolve {where} ({_said(exc)}){still}. {_offline_fix(config_cached=False)}"
        ) from exc


class _Unreachable(Exception):
    """The Hub did not answer (no network, no DNS, a proxy refusing)."""


def _ask_hub(repo: str, filename: str, revision: str | None, cached_will_do: bool = True) -> None:
    """One HEAD request for a file, without huggingface_hub's retries (5, backing off over
    about 20 s, when a network error meets an empty cache). The Hub's own answers (no such
    repo, revision or file) are raised as they are; no answer is `_Unreachable`, unless the
    cache holds the file and `cached_will_do` (hf_hub_download then uses it, as offline)."""
    from huggingface_hub import errors, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    try:
        get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision))
    except errors.HfHubHTTPError:
        raise  # the Hub answered
    except Exception as exc:
        cached = isinstance(try_to_load_from_cache(repo, filename, revision=revision), str)
        if not (cached and cached_will_do):
            raise _Unreachable(first_line(exc)) from exc


def _check_image_model(config_dir: str, where: str) -> None:
    """On the driver: the config names a model class AutoModel builds, taking pixel_values."""
    transformers = _transformers()
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        config = transformers.AutoConfig.from_pretrained(config_dir)
        model_class: Any = MODEL_MAPPING[type(config)]
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"{where}: transformers has no AutoModel for its config ({first_line(exc)}); "
            f"featurex runs no remote code"
        ) from exc
    takes_pixels = "pixel_values" in inspect.signature(model_class.forward).parameters
    if not (hasattr(model_class, "get_image_features") or takes_pixels):
        raise ConfigError(
            f"{where} is a {model_class.__name__}, which takes no images (no pixel_values): "
            f"expected an image model such as CLIP, SigLIP or DINOv2"
        )
