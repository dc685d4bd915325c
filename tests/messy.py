"""A messy folder of user files, as issue 26's new user met it: hidden names (`_DSC0001.JPG`,
`_archive/`, a `.thumbnails/` folder), macOS `._` AppleDouble files and `.DS_Store`, a
zero-byte file, a truncated JPEG, a text file, upper-case extensions, spaces and non-ASCII
names (`café/`, `日本/左`), and every format featurex decodes.

`build(root)` writes it and returns what each file should become: "row" (featurized), "error"
(a row with a reason) or the reason it is left out ("not an image", "macOS metadata").
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

from images import encode, jpeg, photo
from PIL import Image

# AppleDouble's header: magic 0x00051607, version 2 (what macOS writes beside a file on a
# filesystem without resource forks: a USB stick, a network share, a zip).
APPLE_DOUBLE = struct.pack(">II", 0x00051607, 0x00020000) + bytes(16) + struct.pack(">H", 0)


def _gif() -> bytes:
    frames = [photo(64, 48, s).convert("P") for s in (1, 2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


def build(root: Path) -> dict[str, str]:
    """Writes the folder under `root`; returns {relative path: expected fate}."""
    p = photo(120, 90, 7)
    files: dict[str, tuple[bytes, str]] = {
        "Grace Hopper.JPG": (jpeg(160, 120, 1), "row"),
        "._Grace Hopper.JPG": (APPLE_DOUBLE, "macOS metadata"),
        "_DSC0001.JPG": (jpeg(150, 100, 2), "row"),
        "IMG_0002.Jpg": (jpeg(100, 150, 3), "row"),
        "holiday photo 1.jpeg": (jpeg(140, 90, 4), "row"),
        "rgba.png": (encode(p.convert("RGBA"), "PNG"), "row"),
        "gray.PNG": (encode(p.convert("L"), "PNG"), "row"),
        "anim.gif": (_gif(), "row"),
        "bitmap.bmp": (encode(p, "BMP"), "row"),
        "photo.webp": (encode(p, "WEBP"), "row"),
        "scan.TIFF": (encode(p, "TIFF"), "row"),
        "empty.jpg": (b"", "error"),
        "truncated.jpg": (jpeg(200, 150, 5)[:300], "error"),
        "notes.txt": (b"camera settings, not an image\n", "not an image"),
        ".DS_Store": (b"\x00\x00\x00\x01Bud1" + bytes(32), "not an image"),
        "nested/a.jpeg": (jpeg(90, 90, 6), "row"),
        "nested/deeper/b.JPEG": (jpeg(80, 120, 8), "row"),
        "nested/._b.JPEG": (APPLE_DOUBLE, "macOS metadata"),
        "nested/.hidden.png": (encode(photo(70, 70, 9), "PNG"), "row"),
        "café/crème brûlée.jpg": (jpeg(110, 80, 10), "row"),
        "café/menu.png": (encode(photo(90, 60, 11), "PNG"), "row"),
        "日本/左/写真.jpg": (jpeg(100, 100, 12), "row"),
        "日本/右.png": (encode(photo(60, 90, 13), "PNG"), "row"),
        "_archive/old1.jpg": (jpeg(100, 70, 14), "row"),
        "_archive/old2.png": (encode(photo(50, 50, 15), "PNG"), "row"),
        "_archive/_SUCCESS": (b"", "not an image"),
        ".thumbnails/t1.jpg": (jpeg(40, 30, 16), "row"),
        "nested/broken.png": (b"\x89PNG\r\n\x1a\n not really", "error"),
    }
    for name, (data, _) in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    Image.init()
    return {name: fate for name, (_, fate) in files.items()}
