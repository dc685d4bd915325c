"""Tiny models of each family, saved the way users save them, and each library's own
reference pipeline, run by hand (no featurex) for the tests to compare against."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TIMM_ARCH = "test_vit"  # timm's own tiny test model
OPEN_CLIP_ARCH = "ViT-S-32"  # the smallest built-in open_clip architecture


def _pil(images: Sequence[bytes]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(b)).convert("RGB") for b in images]


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A CLIPModel (vision and text towers) with its image processor, via save_pretrained."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    text = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
            "num_hidden_layers": 2, "vocab_size": 99, "bos_token_id": 0, "eos_token_id": 1}  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
              "num_hidden_layers": 2, "image_size": 32, "patch_size": 8}  # fmt: skip
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    model.save_pretrained(folder)
    processor = CLIPImageProcessor(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}
    )
    processor.save_pretrained(folder)
    return folder


def save_tiny_dinov2(folder: Path, seed: int = 0) -> Path:
    """A Dinov2Model with the BitImageProcessor DINOv2 repos use, via save_pretrained."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=37, image_size=32, patch_size=8)  # fmt: skip
    model = Dinov2Model(config)
    with torch.no_grad():  # trained-like: the init has unit layer scales and zero biases
        for layer in model.modules():
            if hasattr(layer, "lambda1"):
                layer.lambda1.uniform_(0.05, 2.0)
            if isinstance(layer, torch.nn.Linear):
                layer.bias.normal_(std=0.1)
    model.save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)  # fmt: skip
    return folder


def hf_reference(folder: Path, images: Sequence[bytes]) -> np.ndarray:
    """transformers by hand: the folder's AutoImageProcessor and model, the documented rule."""
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    pixels = processor(images=_pil(images), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        if hasattr(model, "get_image_features"):
            out = model.get_image_features(pixel_values=pixels)
            return (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()
        return model(pixel_values=pixels).pooler_output.numpy()


def save_timm_state(path: Path, seed: int = 0) -> Path:
    """A fine-tuned timm model's state_dict (10 classes), as safetensors."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    save_file(timm.create_model(TIMM_ARCH, num_classes=10).state_dict(), path)
    return path


def timm_reference(path: Path, images: Sequence[bytes]) -> np.ndarray:
    """timm by hand: num_classes=0, resolve_data_config + create_transform (eval)."""
    import timm
    from safetensors.torch import load_file

    model = timm.create_model(TIMM_ARCH, num_classes=10)
    model.load_state_dict(load_file(path))
    model.reset_classifier(0)
    model.eval()
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config, is_training=False)
    with torch.no_grad():
        return model(torch.stack([transform(i) for i in _pil(images)])).numpy()


def save_open_clip_state(path: Path, seed: int = 0) -> Path:
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(OPEN_CLIP_ARCH, pretrained=None)
    torch.save(model.state_dict(), path)
    return path


def open_clip_reference(path: Path, images: Sequence[bytes]) -> np.ndarray:
    """open_clip by hand: its own eval transform and encode_image."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(
        OPEN_CLIP_ARCH, pretrained=str(path)
    )
    model.eval()
    with torch.no_grad():
        return model.encode_image(torch.stack([preprocess(i) for i in _pil(images)])).numpy()


def fake_hub_repo(cache: Path, repo: str, folder: Path, commit: str = "a1" * 20) -> str:
    """`folder`'s files as the Hugging Face cache holds a downloaded repo: blobs, a snapshot
    named after the commit, and refs/main naming it. Returns the commit."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for file in folder.iterdir():
        blob = root / "blobs" / f"{file.name}.blob"
        blob.write_bytes(file.read_bytes())
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return commit
