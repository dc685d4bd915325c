"""JPEGs with fuzzed headers: the markers libjpeg reads before a pixel is decoded.

Each file starts from a real JPEG (4:2:0 and 4:4:4 colour with JFIF and EXIF, grayscale,
optimized Huffman tables, restart markers) split into its segments, then gets one to three
mutations: a segment's payload bytes, its length field, its marker code, a Huffman table's
counts or symbols, a quantization table's index or values, component IDs, sampling factors
and table selectors; or a whole segment dropped or repeated. Many keep a header Pillow opens.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from images import encode, photo

Segment = tuple[int, bytes]  # (marker, payload after the length field); SOS carries its scan


def seeds() -> list[bytes]:
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00"
    image = photo(40, 32, seed=11)
    return [
        encode(image, "JPEG", quality=85),  # 4:2:0, JFIF
        encode(image, "JPEG", quality=90, subsampling=0, exif=exif),  # 4:4:4, EXIF
        encode(image.convert("L"), "JPEG", quality=80),
        encode(image, "JPEG", quality=75, optimize=True),  # Huffman tables of its own
        encode(image, "JPEG", quality=80, restart_marker_blocks=2),  # DRI, RSTn in the scan
    ]


def split(data: bytes) -> list[Segment]:
    """SOI .. SOS as (marker, payload); the last holds the SOS payload + scan + EOI."""
    segments, at = [], 2
    while True:
        marker, length = data[at + 1], int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xDA:
            segments.append((marker, data[at + 4 :]))
            return segments
        segments.append((marker, data[at + 4 : at + 2 + length]))
        at += 2 + length


def join(segments: list[Segment], lengths: dict[int, int] | None = None) -> bytes:
    out = bytearray(b"\xff\xd8")
    for i, (marker, payload) in enumerate(segments):
        header = payload if marker != 0xDA else payload[: 4 + 2 * payload[0]] if payload else b""
        length = (lengths or {}).get(i, len(header) + 2) & 0xFFFF
        out += bytes((0xFF, marker)) + length.to_bytes(2, "big") + payload
    return bytes(out)


def header_fuzzed(count: int, seed: int = 3) -> Iterator[bytes]:
    rng = np.random.default_rng(seed)
    bases = [split(s) for s in seeds()]
    for i in range(count):
        segments = list(bases[i % len(bases)])
        lengths: dict[int, int] = {}
        for _ in range(int(rng.integers(1, 4))):
            _mutate(segments, lengths, rng)
        yield join(segments, lengths)


def _mutate(segments: list[Segment], lengths: dict[int, int], rng: np.random.Generator) -> None:
    header = [i for i, (m, _) in enumerate(segments) if m != 0xDA]
    sos = len(segments) - 1
    kind = int(rng.integers(0, 9))
    i = int(rng.choice([*header, sos]))
    marker, payload = segments[i]
    body = bytearray(payload)
    limit = 4 + 2 * body[0] if marker == 0xDA and body else len(body)
    if kind == 0 and limit:  # a payload byte
        body[int(rng.integers(0, limit))] = int(rng.integers(0, 256))
    elif kind == 1:  # the length field
        lengths[i] = int(rng.choice([0, 1, 2, len(body) + 1, len(body) - 1, len(body) + 3, 65535]))
    elif kind == 2 and i != sos:  # the marker code
        marker = int(
            rng.choice(
                [
                    0xC1,
                    0xC2,
                    0xC3,
                    0xC4,
                    0xC8,
                    0xCC,
                    0xDB,
                    0xDC,
                    0xDD,
                    0xDF,
                    0xE1,
                    0xF0,
                    0xFE,
                    0x01,
                    0xD0,
                ]
            )
        )
    elif kind == 3:  # a whole segment dropped, or repeated
        if rng.random() < 0.5 and i != sos:
            del segments[i]
            return
        segments.insert(i, segments[i])
        return
    else:
        _table(marker, body, rng, kind)
    segments[i] = (marker, bytes(body))


def _table(marker: int, body: bytearray, rng: np.random.Generator, kind: int) -> None:
    """Mutations that aim at what libjpeg checks in each kind of segment."""
    if not body:
        return
    if marker == 0xC4 and len(body) > 17:  # DHT: class/index, code counts, symbols
        at = int(rng.integers(0, 3))
        if at == 0:
            body[0] = int(rng.choice([0x00, 0x01, 0x04, 0x10, 0x13, 0x14, 0x20]))
        elif at == 1:
            body[1 + int(rng.integers(0, 16))] = int(rng.integers(0, 256))
        else:
            body[17 + int(rng.integers(0, len(body) - 17))] = int(rng.integers(0, 256))
    elif marker == 0xDB and len(body) > 1:  # DQT: precision/index, values
        if rng.random() < 0.5:
            body[0] = int(rng.choice([0x00, 0x01, 0x03, 0x04, 0x10, 0x20]))
        else:
            body[1 + int(rng.integers(0, len(body) - 1))] = int(rng.choice([0, 1, 255]))
    elif marker in (0xC0, 0xC1) and len(body) >= 9:  # SOF: precision, size, components
        at = int(rng.integers(0, 5))
        if at == 0:
            body[0] = int(rng.choice([0, 7, 12, 16]))
        elif at == 1:
            body[1:3] = b"\x00\x00"
        elif at == 2:
            body[5] = int(rng.choice([0, 2, 4, 5]))
        else:
            c = 6 + 3 * int(rng.integers(0, max(1, (len(body) - 6) // 3)))
            field = int(rng.integers(0, 3))
            body[c + field] = int(
                rng.choice(
                    [[0, 1, 2, 82], [0x00, 0x11, 0x21, 0x22, 0x41, 0x12, 0x15, 0x50], [0, 1, 3, 4]][
                        field
                    ]
                )
            )
    elif marker == 0xDA and len(body) > 6:  # SOS: count, components, tables, Ss/Se/AhAl
        n = body[0]
        at = int(rng.integers(0, 4))
        if at == 0:
            body[0] = int(rng.choice([0, 1, 2, 4]))
        elif at == 1 and n:
            body[1 + 2 * int(rng.integers(0, n))] = int(rng.choice([0, 1, 2, 3, 9]))
        elif at == 2 and n:
            body[2 + 2 * int(rng.integers(0, n))] = int(
                rng.choice([0x00, 0x11, 0x22, 0x33, 0x01, 0x10, 0x44])
            )
        elif 3 + 2 * n < len(body):
            body[1 + 2 * n + int(rng.integers(0, 3))] = int(rng.choice([0, 1, 0x3F, 0x10]))
    else:  # APPn, COM, DRI: any byte
        body[int(rng.integers(0, len(body)))] = int(rng.integers(0, 256))
