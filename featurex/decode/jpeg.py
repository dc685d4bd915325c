"""A JPEG's marker structure, read with libjpeg's rules: may nvJPEG decode this file?

nvJPEG checks little of what it parses (torchvision's hardware branch ignores the status of
`nvjpegJpegStreamParseHeader`), so a corrupt file it is given can come back as pixels where
Pillow's libjpeg-turbo refuses it. `nvjpeg_frame` reads the whole marker structure once, in
microseconds and without decoding a pixel, with the checks libjpeg-turbo 3 makes before and
while it decodes (`jdmarker.c`: segment lengths, DQT, DHT, SOF, SOS, DRI, unsupported
markers; `jdhuff.c`: Huffman code overflow, DC symbols; `jdinput.c`: dimensions, precision,
sampling, blocks per MCU, quantization tables defined; `jdapimin.c`: the color space), and
after the scan, the markers up to EOI as libjpeg reads them.

It is deliberately narrower than libjpeg: only what is plainly a complete, single-scan,
interleaved, 8-bit YCbCr or grayscale baseline (or extended sequential) JPEG goes to nvJPEG.
Everything else, corrupt or merely unusual (progressive, arithmetic, restart markers between
header segments, extraneous bytes), stays with Pillow, whose verdict is final. So this check
decides only where a file is decoded, never whether it is: a file it turns away costs speed,
not a different answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Bytes = bytes | bytearray | memoryview

_MAX_DIMENSION = 65500  # JPEG_MAX_DIMENSION
_MAX_BLOCKS_IN_MCU = 10  # D_MAX_BLOCKS_IN_MCU
_JFIF, _ADOBE = b"JFIF\x00", b"Adobe"
_RGB_IDS = (82, 71, 66)  # 'R', 'G', 'B': libjpeg then decodes without YCbCr conversion
# libjpeg's marker search after a scan (`jdhuff.c`'s fill_bit_buffer, `next_marker`): 0xFF
# bytes (fill), then a byte other than 0x00 (a stuffed 0xFF data byte) is a marker. The match
# lands on the last fill byte; written as one 0xFF and a range, re scans 16x faster than with
# `\xff+` (0.4 ns a byte: 0.7 ms for a 1.7 MB photo).
_NEXT_MARKER = re.compile(rb"\xff[\x01-\xfe]")
_SOF_NAMES = {
    0xC2: "progressive",
    0xC3: "lossless",
    0xC5: "differential",
    0xC6: "differential progressive",
    0xC7: "differential lossless",
    0xC9: "arithmetic",
    0xCA: "arithmetic progressive",
    0xCB: "arithmetic lossless",
    0xCD: "arithmetic differential",
    0xCE: "arithmetic differential progressive",
    0xCF: "arithmetic differential lossless",
}


@dataclass(frozen=True)
class Frame:
    """What the SOF says: the size nvJPEG will decode to, and the components."""

    width: int
    height: int
    components: int


class _Stay(Exception):
    """This file stays with Pillow; the message says why."""


def nvjpeg_frame(data: Bytes) -> Frame | str:
    """The frame of a JPEG that nvJPEG may decode with Pillow's verdict, or the reason it
    stays with Pillow (libjpeg's words where libjpeg would refuse it)."""
    try:
        return _walk(data if isinstance(data, bytes) else bytes(data))
    except _Stay as exc:
        return str(exc)


@dataclass
class _Tables:
    quant: set[int]
    huffman: dict[tuple[int, int], bool]  # (0 DC / 1 AC, slot) -> has symbols


def _walk(data: bytes) -> Frame:
    if not data.startswith(b"\xff\xd8"):
        raise _Stay("no SOI marker")
    tables = _Tables(set(), {})
    frame: tuple[Frame, list[tuple[int, int, int, int]]] | None = None
    jfif, adobe = False, -1  # -1: no Adobe marker; else its transform
    pos, end = 2, len(data)
    while True:
        # Between segments libjpeg allows fill bytes (0xFF) and warns on anything else.
        if pos >= end or data[pos] != 0xFF:
            raise _Stay("extraneous bytes before a marker" if pos < end else "truncated header")
        while pos < end and data[pos] == 0xFF:
            pos += 1
        if pos + 2 >= end:
            raise _Stay("truncated header")
        marker = data[pos]
        length = (data[pos + 1] << 8) | data[pos + 2]
        if marker in (0xD8, 0xD9) or 0xD0 <= marker <= 0xD7 or marker in (0x00, 0x01):
            raise _Stay(f"marker 0x{marker:02X} in the header")
        if length < 2 or pos + 1 + length > end:
            raise _Stay(f"bogus marker length {length} (marker 0x{marker:02X})")
        body = data[pos + 3 : pos + 1 + length]
        pos += 1 + length
        if marker in (0xC0, 0xC1):
            if frame is not None:
                raise _Stay("duplicate SOF marker")
            frame = _sof(body)
        elif marker in _SOF_NAMES:
            raise _Stay(f"{_SOF_NAMES[marker]} JPEG (SOF{marker - 0xC0})")
        elif marker == 0xC4:
            _dht(body, tables)
        elif marker == 0xDB:
            _dqt(body, tables)
        elif marker == 0xDD:
            if length != 4:
                raise _Stay("bogus DRI length")
        elif marker == 0xE0:
            jfif = jfif or body.startswith(_JFIF)
        elif marker == 0xEE:
            if body.startswith(_ADOBE) and len(body) >= 12:
                adobe = body[11]
        elif 0xE1 <= marker <= 0xEF or marker == 0xFE:
            pass  # APPn, COM: skipped by length
        elif marker == 0xDA:
            if frame is None:
                raise _Stay("SOS before SOF")
            _sos(body, frame[1], tables)
            break
        else:  # DAC, DNL, JPG, JPGn, DHP, EXP, RESn: refused or not for nvJPEG
            raise _Stay(f"unsupported marker 0x{marker:02X}")
    found, components = frame
    if found.components == 3:
        ids = tuple(c[0] for c in components)
        if not (jfif or adobe == 1 or (adobe == -1 and ids != _RGB_IDS)):
            raise _Stay("not YCbCr (Adobe transform or RGB component IDs)")
    # The scan's entropy-coded data, then the markers libjpeg reads up to EOI: restart
    # markers are parameterless; anything else (a second scan, a table, a second SOI) is
    # either refused by libjpeg or beyond this check.
    for hit in _NEXT_MARKER.finditer(data, pos):
        code = data[hit.end() - 1]
        if 0xD0 <= code <= 0xD7:
            continue
        if code == 0xD9:
            return found
        raise _Stay(f"marker 0x{code:02X} after the scan")
    raise _Stay("no EOI after the scan: truncated")


def _sof(body: bytes) -> tuple[Frame, list[tuple[int, int, int, int]]]:
    if len(body) < 6 or len(body) != 6 + 3 * body[5]:
        raise _Stay("bogus SOF length")
    precision, height, width = body[0], (body[1] << 8) | body[2], (body[3] << 8) | body[4]
    count = body[5]
    if precision != 8:
        raise _Stay(f"unsupported JPEG data precision {precision}")
    if height == 0 or width == 0:
        raise _Stay("empty JPEG image (DNL not supported)")
    if height > _MAX_DIMENSION or width > _MAX_DIMENSION:
        raise _Stay(f"maximum supported image dimension is {_MAX_DIMENSION} pixels")
    if count not in (1, 3):
        raise _Stay(f"{count} components: nvJPEG takes YCbCr and grayscale")
    components = []  # (id, horizontal, vertical, quantization table)
    for i in range(count):
        cid, factors, quant = body[6 + 3 * i : 9 + 3 * i]
        h, v = factors >> 4, factors & 15
        if not (1 <= h <= 4 and 1 <= v <= 4):
            raise _Stay("bogus sampling factors")
        if quant >= 4:
            raise _Stay(f"quantization table 0x{quant:02x} was not defined")
        components.append((cid, h, v, quant))
    if len({c[0] for c in components}) != count:
        raise _Stay("duplicate component IDs")
    if count == 3:
        (_, h, v, _), chroma = components[0], [c[1:3] for c in components[1:]]
        if h > 2 or v > 2 or chroma != [(1, 1), (1, 1)]:
            raise _Stay("unusual chroma subsampling")
    return Frame(width, height, count), components


def _sos(body: bytes, components: list[tuple[int, int, int, int]], tables: _Tables) -> None:
    if not body or len(body) != 4 + 2 * body[0]:
        raise _Stay("bogus SOS length")
    count = body[0]
    if count != len(components):
        raise _Stay("a scan of some components only (a multi-scan JPEG)")
    seen: set[int] = set()
    for i in range(count):
        cid, selectors = body[1 + 2 * i], body[2 + 2 * i]
        index = next((j for j, c in enumerate(components) if c[0] == cid), None)
        if index is None or index in seen:
            raise _Stay(f"invalid component ID {cid} in SOS")
        seen.add(index)
        for kind, slot in ((0, selectors >> 4), (1, selectors & 15)):
            if not tables.huffman.get((kind, slot), False):
                raise _Stay(f"Huffman table 0x{slot:02x} was not defined")
        quant = components[index][3]
        if quant not in tables.quant:
            raise _Stay(f"quantization table 0x{quant:02x} was not defined")
    start, stop, approx = body[1 + 2 * count : 4 + 2 * count]
    if (start, stop, approx) != (0, 63, 0):
        raise _Stay("not a sequential scan (Ss, Se, Ah/Al)")
    if count > 1 and sum(h * v for _, h, v, _ in components) > _MAX_BLOCKS_IN_MCU:
        raise _Stay("sampling factors too large for interleaved blocks")


def _dht(body: bytes, tables: _Tables) -> None:
    at = 0
    while len(body) - at > 16:
        index, counts = body[at], body[at + 1 : at + 17]
        at += 17
        count = sum(counts)
        if count > 256 or count > len(body) - at:
            raise _Stay("bogus Huffman table definition")
        symbols = body[at : at + count]
        at += count
        kind, slot = (1, index - 0x10) if index & 0x10 else (0, index)
        if not 0 <= slot < 4:
            raise _Stay(f"bogus DHT index {slot}")
        # jdhuff.c: codes of each length, counted up; the all-ones code of a length is not
        # allowed, so a table whose codes overflow their length is refused.
        code, last = 0, max((n for n, c in enumerate(counts, 1) if c), default=0)
        for bits in range(1, last + 1):
            code += counts[bits - 1]
            if code >= 1 << bits:
                raise _Stay("bogus Huffman table definition")
            code <<= 1
        if kind == 0 and any(s > 15 for s in symbols):
            raise _Stay("bogus Huffman table definition")
        tables.huffman[kind, slot] = count > 0
    if at != len(body):
        raise _Stay("bogus DHT length")


def _dqt(body: bytes, tables: _Tables) -> None:
    at = 0
    while at < len(body):
        precision, slot = body[at] >> 4, body[at] & 15
        if slot >= 4:
            raise _Stay(f"bogus DQT index {slot}")
        if precision > 1:
            raise _Stay(f"bogus DQT precision {precision}")
        at += 1 + 64 * (2 if precision else 1)
        if at > len(body):
            raise _Stay("bogus DQT length")
        tables.quant.add(slot)
