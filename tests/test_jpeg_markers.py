"""One verdict per file, whatever the GPU decoder accepts.

nvJPEG decodes files that Pillow's libjpeg-turbo refuses (torchvision ignores the status of
its header parse). So the GPU path is run here with the most lenient decoder possible in
nvJPEG's place, one that never raises and returns flat pixels of the SOF's size: every file
must still get the Pillow path's verdict, with the same reason, because the marker check
(`featurex.decode.jpeg`) keeps from the GPU decoder every file libjpeg would refuse. The
strict stand-in (torchvision's libjpeg-turbo on the CPU) is tests/test_gpu_path.py's.
"""

from __future__ import annotations

import io

import hostile
import pytest
import torch
from images import encode, jpeg, photo, with_orientation
from jpeg_fuzz import header_fuzzed, seeds
from PIL import Image
from test_gpu_path import _fuzzed, decoded_on_gpu, engines
from torchvision import transforms as T

from featurex.decode import gpu as gpu_decode
from featurex.decode.jpeg import Frame, nvjpeg_frame


def lenient(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """nvJPEG at its most lenient: any bytes -> gray pixels of the size the header claims."""
    out = []
    for data in encoded:
        try:
            width, height = Image.open(io.BytesIO(data.numpy().tobytes())).size
        except Exception:
            width, height = 8, 8
        out.append(torch.full((3, height, width), 128, dtype=torch.uint8, device=device))
    return out


def small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )


SMALL = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])


@pytest.mark.parametrize(
    "corpus",
    ["hostile", "fuzzed", "header-fuzzed"],
)
def test_with_a_decoder_that_refuses_nothing_every_file_gets_pillows_verdict(
    corpus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    files: list[object] = {
        "hostile": lambda: [c.data for c in hostile.corpus()],
        "fuzzed": lambda: list(_fuzzed(300)),
        "header-fuzzed": lambda: list(header_fuzzed(400)),
    }[corpus]()
    pillow, gpu = engines(model=small_cnn, transform=SMALL, batch_size=32)
    _, want = pillow.extract(files)
    monkeypatch.setattr(gpu_decode, "_decode", lenient)
    _, got, on_gpu = decoded_on_gpu(gpu, files)
    mismatched = [(i, a, b) for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b]
    assert not mismatched, mismatched[:5]
    refused = sum(e is not None for e in want)
    assert on_gpu >= 10 and refused >= 15, (on_gpu, refused)  # both kinds ran


def test_plain_jpegs_go_to_nvjpeg_with_their_size() -> None:
    image = photo(40, 30, seed=1)
    plain = [
        *seeds(),  # 4:2:0, 4:4:4 with EXIF, grayscale, optimized tables, restart markers
        jpeg(64, 48) + b"\x00trailing bytes" * 8,
        with_orientation(image, 6),
    ]
    for data in plain:
        frame = nvjpeg_frame(data)
        assert isinstance(frame, Frame), frame
        assert (frame.width, frame.height) == Image.open(io.BytesIO(data)).size


def _segment(data: bytes, marker: int) -> int:
    """The offset of the first segment with this marker (walking the lengths)."""
    at = 2
    while data[at + 1] != marker:
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return at


def _patched(data: bytes, marker: int, offset: int, value: bytes) -> bytes:
    at = _segment(data, marker) + 4 + offset  # past the marker and its length
    return data[:at] + value + data[at + len(value) :]


GOOD = jpeg(64, 48, seed=2)
SCAN = GOOD.rindex(b"\xff\xda")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_patched(GOOD, 0xC4, 1, b"\xff" * 16), "bogus Huffman table definition"),
        (
            _patched(GOOD, 0xC4, 1, b"\x00\x04" + b"\x00" * 14),
            "bogus Huffman table definition",
        ),  # 4 codes of 2 bits: the all-ones code
        (
            _patched(GOOD, 0xC4, 17, b"\x20"),
            "bogus Huffman table definition",
        ),  # a DC symbol over 15
        (_patched(GOOD, 0xDA, 2, b"\x22"), "Huffman table 0x02 was not defined"),
        (_patched(GOOD, 0xC0, 8, b"\x02"), "quantization table 0x02 was not defined"),
        (_patched(GOOD, 0xC0, 9, b"\x01"), "duplicate component IDs"),  # the second is also 1
        (_patched(GOOD, 0xDA, 3, b"\x01"), "invalid component ID 1 in SOS"),  # named twice
        (_patched(GOOD, 0xDB, -2, b"\x00\x40"), "bogus DQT length"),
        (_patched(GOOD, 0xC0, 0, b"\x0c"), "unsupported JPEG data precision 12"),
        (_patched(GOOD, 0xC0, 7, b"\x31"), "unusual chroma subsampling"),
        (_patched(GOOD, 0xDA, 7, b"\x00\x00"), "not a sequential scan (Ss, Se, Ah/Al)"),
        (encode(photo(40, 30), "JPEG", progressive=True), "progressive JPEG (SOF2)"),
        (GOOD[:-2], "no EOI after the scan: truncated"),
        (GOOD[: SCAN + 40], "no EOI after the scan: truncated"),
        (GOOD[: SCAN + 40] + b"\xff\xc4\x00\x02" + GOOD[SCAN + 40 :], "marker 0xC4 after the scan"),
        (GOOD[:-2] + b"\xff\xda" + GOOD[SCAN + 2 :], "marker 0xDA after the scan"),  # a 2nd scan
        (GOOD[:2] + b"\x00" + GOOD[2:], "extraneous bytes before a marker"),
        (
            encode(photo(40, 30).convert("CMYK"), "JPEG"),
            "4 components: nvJPEG takes YCbCr and grayscale",
        ),
        (_patched(GOOD, 0xDB, -2, b"\x00\x01"), "bogus marker length 1 (marker 0xDB)"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_what_libjpeg_refuses_or_nvjpeg_decodes_otherwise_stays_with_pillow(
    data: bytes, reason: str
) -> None:
    assert nvjpeg_frame(data) == reason


def test_rgb_jpegs_stay_with_pillow() -> None:
    # An Adobe APP14 marker with transform 0: libjpeg decodes the samples as RGB; a decoder
    # that assumes YCbCr would give other colours.
    adobe_rgb = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
    no_jfif = GOOD[:2] + GOOD[_segment(GOOD, 0xDB) :]
    assert isinstance(nvjpeg_frame(no_jfif), Frame)  # IDs 1, 2, 3: YCbCr
    assert nvjpeg_frame(no_jfif[:2] + adobe_rgb + no_jfif[2:]) == (
        "not YCbCr (Adobe transform or RGB component IDs)"
    )
