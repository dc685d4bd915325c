"""The GPU decoder: checked JPEG bytes -> nvJPEG in batches -> the model's resize and crop,
on the model's GPU.

The bytes travel to the GPU as they are (a tenth of the float tensor), through one pinned
host buffer reused for every batch. One `torchvision.io.decode_jpeg` call decodes a batch;
where it fails (one bad file fails the whole call), the batch is retried image by image, so
a bad file costs only itself, and a file nvJPEG refuses (or decodes differently: see
`header.gpu_jpeg`) goes to the Pillow path, whose verdict is final. torchvision decodes the
same batches on the CPU (libjpeg-turbo), which is how the tests run this module without a GPU.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
import torch

from .preprocess import Preprocessing, crop_tensor

log = logging.getLogger(__name__)

Result = tuple[torch.Tensor | None, str | None]
# This process's counts, for benchmarks and logs: JPEGs nvJPEG decoded, and those it refused
# (decoded by Pillow instead).
STATS = {"decoded": 0, "refused": 0}


def available(device: torch.device) -> bool:
    """Whether torchvision can decode JPEGs on `device` (a CUDA build with nvJPEG); tried
    once per process and device."""
    return device.type == "cuda" and torch.cuda.is_available() and _decodes_on(str(device))


@cache
def _decodes_on(device: str) -> bool:
    import io

    from PIL import Image

    encoded = io.BytesIO()
    Image.new("RGB", (8, 8)).save(encoded, "JPEG")
    try:
        _decode([torch.tensor(list(encoded.getvalue()), dtype=torch.uint8)], torch.device(device))
        return True
    except Exception as exc:
        log.info("torchvision cannot decode JPEGs on %s (%s)", device, exc)
        return False


class GpuDecoder:
    """Batches of `header.Encoded` JPEGs -> float (3, H, W) crops (pixel values 0-255) on
    `device`, resized in float (`preprocess.crop_tensor`'s `exact=False`)."""

    def __init__(
        self,
        device: torch.device,
        preprocessing: Preprocessing,
        fallback: Callable[[bytes | bytearray | memoryview], Result],
    ) -> None:
        self.device = device
        self.preprocessing = preprocessing
        self.fallback = fallback  # the Pillow path, for what nvJPEG refuses
        self._staging = torch.empty(0, dtype=torch.uint8)
        # torchvision decodes on a stream of its own, into outputs allocated on the caller's
        # current stream, and does not wait for the work queued there: memory that the batch
        # still running has just freed could be written while it is read. Outputs allocated
        # on a side stream, and kept until the model's stream is done with them, cannot.
        self._side = torch.cuda.Stream(device) if device.type == "cuda" else None  # type: ignore[no-untyped-call]

    def decode(self, jpegs: Sequence[tuple[bytes | bytearray | memoryview, int]]) -> list[Result]:
        """(bytes, EXIF orientation) pairs -> (crop, None) or (None, reason), in order."""
        if not jpegs:
            return []
        inputs = self._stage([data for data, _ in jpegs])
        decoded: list[torch.Tensor | None]
        try:
            decoded = list(self._decode(inputs))
        except Exception as exc:  # one bad file fails the call: retry each on its own
            log.debug("nvJPEG failed on a batch of %d (%s): one by one", len(inputs), exc)
            decoded = [self._one(t) for t in inputs]
        results: list[Result] = []
        for (data, turn), pixels in zip(jpegs, decoded, strict=True):
            STATS["decoded" if pixels is not None else "refused"] += 1
            if pixels is None:
                results.append(self.fallback(data))
            else:
                crop = crop_tensor(orient(pixels, turn), self.preprocessing, exact=False)
                results.append((crop, None))
        return results

    def _one(self, encoded: torch.Tensor) -> torch.Tensor | None:
        try:
            return self._decode([encoded])[0]
        except Exception as exc:
            log.debug("nvJPEG refused a file (%s): Pillow decodes it", exc)
            return None

    def _stage(self, blobs: list[bytes | bytearray | memoryview]) -> list[torch.Tensor]:
        """The encoded files as views of one reused host buffer (pinned for a GPU: the copy
        to the device then runs as DMA). decode_jpeg synchronizes before it returns, so the
        buffer is free again for the next batch."""
        sizes = [len(b) for b in blobs]
        total = sum(sizes)
        if total > self._staging.numel():
            grown = max(total, 2 * self._staging.numel())
            self._staging = (
                pinned_bytes(grown, self.device)
                if self.device.type == "cuda"
                else torch.empty(grown, dtype=torch.uint8)
            )
        host = self._staging.numpy()
        views, offset = [], 0
        for blob, size in zip(blobs, sizes, strict=True):
            host[offset : offset + size] = np.frombuffer(blob, dtype=np.uint8)
            views.append(self._staging[offset : offset + size])
            offset += size
        return views

    def _decode(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if self._side is None:  # the CPU stand-in of the tests
            return _decode(inputs, self.device)
        main = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._side):
            out = _decode(inputs, self.device)
        main.wait_stream(self._side)
        for pixels in out:  # not reused for a later decode before main has read it
            pixels.record_stream(main)
        return out


def pinned_bytes(size: int, device: torch.device) -> torch.Tensor:
    """`size` bytes of host memory pinned for `device`, allocated with it current: pinning
    under another device would create a CUDA context there (GPU 0, in every task)."""
    with torch.cuda.device(device):
        return torch.empty(size, dtype=torch.uint8, pin_memory=True)


def _decode(inputs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec, which the GPU
        # machines this runs on do not have; libjpeg's warnings on odd files are Pillow's too.
        warnings.simplefilter("ignore")
        out = decode_jpeg(inputs, mode=ImageReadMode.RGB, device=device)
    return list(out) if isinstance(out, list) else [out]


def orient(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """A (C, H, W) tensor turned as Pillow's `exif_transpose` turns an image."""
    if orientation == 2:  # FLIP_LEFT_RIGHT
        return pixels.flip(-1)
    if orientation == 3:  # ROTATE_180
        return pixels.flip(-2, -1)
    if orientation == 4:  # FLIP_TOP_BOTTOM
        return pixels.flip(-2)
    if orientation == 5:  # TRANSPOSE
        return pixels.transpose(-2, -1)
    if orientation == 6:  # ROTATE_270 (clockwise a quarter turn)
        return pixels.rot90(-1, dims=(-2, -1))
    if orientation == 7:  # TRANSVERSE
        return pixels.flip(-2, -1).transpose(-2, -1)
    if orientation == 8:  # ROTATE_90 (anticlockwise a quarter turn)
        return pixels.rot90(1, dims=(-2, -1))
    return pixels
