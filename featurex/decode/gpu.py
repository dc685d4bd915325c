"""The GPU decoder: checked JPEG bytes -> nvJPEG in batches -> the model's resize and crop,
on the model's GPU.

The bytes travel to the GPU as they are (a tenth of the float tensor), through one pinned
host buffer reused for every batch. One `torchvision.io.decode_jpeg` call decodes a part of
the batch whose decoded pixels fit `PIXEL_BUDGET`; each decoded image is resized and cropped,
then dropped, so a call holds at most its part's uint8 images and one float copy. Where a call
fails (one bad file fails the whole call), its part is retried by halves, so a bad file costs
about log2(part) calls, and a file nvJPEG refuses goes to the Pillow path, whose verdict is
final (the header checks, `header.gpu_jpeg`, keep nvJPEG's leniency from changing it). An
out-of-memory error anywhere (torchvision re-raises its own as a plain RuntimeError) halves
the budget and retries; an image that fails alone, or whose resize fails, goes to Pillow.
No row is lost. torchvision decodes the same batches on the CPU (libjpeg-turbo), which is how
the tests run this module without a GPU.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import cache

import numpy as np
import torch

from .header import Bytes, Encoded
from .preprocess import Preprocessing, crop_tensor

log = logging.getLogger(__name__)

Result = tuple[torch.Tensor | None, str | None]
# This process's counts, for benchmarks and logs: JPEGs nvJPEG decoded, those it refused
# (decoded by Pillow instead), and its calls.
STATS = {"decoded": 0, "refused": 0, "calls": 0}
# Decoded pixels per nvJPEG call: 64 Mpx, 192 MiB of RGB (64 photos of 1 Mpx, 5 of 12 Mpx).
# torchvision allocates every output of a call before decoding it.
PIXEL_BUDGET = 1 << 26


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
        log.warning("torchvision cannot decode JPEGs on %s: JPEGs go to Pillow (%s)", device, exc)
        return False


def nvjpeg_backend() -> str:
    """Which nvJPEG backend torchvision's `decode_jpeg` gets on this machine's GPU: it asks
    for the hardware JPEG engines (A100, H100 and newer) and falls back to the CUDA decoder
    only when the GPU has none. Asked here of the same library, the same way."""
    import ctypes
    import glob

    import torchvision

    bundled = glob.glob(f"{os.path.dirname(torchvision.__file__)}.libs/libnvjpeg*.so*")
    for name in [*bundled, "libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so"]:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return "unknown: no libnvjpeg here"
    handle = ctypes.c_void_p()
    status = lib.nvjpegCreateEx(3, None, None, 0, ctypes.byref(handle))  # BACKEND_HARDWARE
    if status == 0:
        lib.nvjpegDestroy(handle)
        return "hardware (the GPU's JPEG engines; progressive files: the CUDA decoder)"
    if status == 7:  # NVJPEG_STATUS_ARCH_MISMATCH: torchvision uses the default backend
        return "CUDA (no JPEG engines on this GPU)"
    return (
        f"none: nvjpegCreateEx(HARDWARE) returned status {status}, which torchvision does not "
        f"fall back from (decode_jpeg on CUDA fails; JPEGs go to Pillow)"
    )


def out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error, also where a library re-raised it as a RuntimeError
    (torchvision: "Error while decoding JPEG images: CUDA out of memory. ...")."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


class GpuDecoder:
    """Batches of `Encoded` JPEGs -> float (3, H, W) crops (pixel values 0-255) on `device`,
    resized in float (`preprocess.crop_tensor`'s `exact=False`)."""

    def __init__(
        self,
        device: torch.device,
        preprocessing: Preprocessing,
        fallback: Callable[[Bytes], Result],
        pixel_budget: int = PIXEL_BUDGET,
    ) -> None:
        self.device = device
        self.preprocessing = preprocessing
        self.fallback = fallback  # the Pillow path, for what nvJPEG refuses
        self.budget = pixel_budget  # halved on an out-of-memory error
        self._staging = torch.empty(0, dtype=torch.uint8)
        # torchvision decodes on a stream of its own, into outputs allocated on the caller's
        # current stream, and does not wait for the work queued there: memory that the batch
        # still running has just freed could be written while it is read. Outputs allocated
        # on a side stream, and kept until the model's stream is done with them, cannot.
        self._side = torch.cuda.Stream(device) if device.type == "cuda" else None  # type: ignore[no-untyped-call]

    def decode(self, jpegs: Sequence[Encoded]) -> list[Result]:
        """JPEGs -> (crop, None) or (None, reason), in order."""
        results: list[Result] = [(None, None)] * len(jpegs)
        for part in self._parts(range(len(jpegs)), jpegs):
            self._run(part, jpegs, results)
        return results

    def _parts(self, indices: Sequence[int], jpegs: Sequence[Encoded]) -> Iterator[list[int]]:
        """`indices` in runs whose decoded pixels fit the budget (an image over it alone)."""
        part: list[int] = []
        pixels = 0
        for i in indices:
            if part and pixels + jpegs[i].pixels > self.budget:
                yield part
                part, pixels = [], 0
            part.append(i)
            pixels += jpegs[i].pixels
        if part:
            yield part

    def _run(self, part: list[int], jpegs: Sequence[Encoded], results: list[Result]) -> None:
        """Decode and crop one part into `results`. The retries run outside the except
        blocks: a traceback holds the frames, and with them the GPU memory, of the failure."""
        try:
            STATS["calls"] += 1
            decoded: list[torch.Tensor | None] = list(
                self._decode(self._stage([jpegs[i].data for i in part]))
            )
        except Exception as exc:
            oom = out_of_memory(exc)
            log.debug("nvJPEG failed on %d files (%s): by halves", len(part), exc)
        else:
            oom = False
            for k, i in enumerate(part):
                pixels, decoded[k] = decoded[k], None  # the full-size image lives until cropped
                assert pixels is not None
                try:
                    crop = crop_tensor(
                        orient(pixels, jpegs[i].orientation), self.preprocessing, exact=False
                    )
                except Exception as exc:
                    if out_of_memory(exc):
                        oom, part = True, part[k:]
                        break
                    log.debug("GPU preprocessing failed (%s): Pillow decodes the file", exc)
                    results[i] = self._refused(jpegs[i])
                    continue
                STATS["decoded"] += 1
                results[i] = (crop, None)
            else:
                return
            del pixels, decoded
        if oom:
            torch.cuda.empty_cache()
            self.budget = max(1, self.budget // 2)
            log.warning(
                "CUDA out of memory while decoding JPEGs: nvJPEG calls now decode at most "
                "%d pixels",
                self.budget,
            )
        if len(part) == 1:  # refused alone, or out of memory alone: Pillow's turn
            results[part[0]] = self._refused(jpegs[part[0]])
            return
        half = (len(part) + 1) // 2
        for piece in (part[:half], part[half:]):
            for sub in self._parts(piece, jpegs):
                self._run(sub, jpegs, results)

    def _refused(self, jpeg: Encoded) -> Result:
        STATS["refused"] += 1
        return self.fallback(jpeg.data)

    def _stage(self, blobs: list[Bytes]) -> list[torch.Tensor]:
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
