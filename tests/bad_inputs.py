"""Files for the bad-input tests of the library and the CLI."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, size: tuple[int, int] = (96, 64), seed: int = 0) -> Path:
    """A valid RGB PNG: noise with a red patch (noise so that the file is large enough to truncate)."""
    w, h = size
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    a[h // 4 : h // 2, w // 4 : w // 2] = (255, 0, 0)
    Image.fromarray(a).save(path)
    return path


def write_text_as_png(path: Path) -> Path:
    path.write_bytes(b"this is not an image, just text\n" * 10)
    return path


def write_truncated_png(path: Path) -> Path:
    """A PNG whose header is intact but whose pixel data stops half way."""
    full = write_png(path, (64, 64)).read_bytes()
    path.write_bytes(full[: len(full) // 2])
    return path


def write_huge_header_png(path: Path, w: int = 100_000, h: int = 100_000) -> Path:
    """A tiny valid PNG whose IHDR then claims ``w`` x ``h`` pixels (CRC fixed, so the header parses)."""
    Image.new("RGB", (1, 1), (255, 0, 0)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", w, h)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def png_with_chunk(path: Path, ctype: bytes, payload: bytes, size: tuple[int, int] = (64, 64)) -> Path:
    """A valid PNG with one extra chunk right after IHDR (so Pillow reads it while opening)."""
    write_png(path, size)
    data = path.read_bytes()
    path.write_bytes(data[:33] + _chunk(ctype, payload) + data[33:])  # 8 signature + 25 IHDR
    return path


def write_ztxt_bomb(path: Path, inflated_bytes: int = 8 * 1024 * 1024) -> Path:
    """A PNG whose zTXt chunk (a few kB) inflates to ``inflated_bytes``, past Pillow's MAX_TEXT_CHUNK (1 MB)."""
    return png_with_chunk(path, b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * inflated_bytes, 9))


def write_iccp_bomb(path: Path, inflated_bytes: int = 8 * 1024 * 1024) -> Path:
    """A PNG whose iCCP colour profile inflates to ``inflated_bytes``."""
    return png_with_chunk(path, b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * inflated_bytes, 9))


def write_eps(path: Path) -> Path:
    """A minimal EPS file: Pillow would hand it to Ghostscript; the input layer must refuse it."""
    path.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto 64 64 lineto stroke\n")
    return path


def write_grey16_png(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A 16-bit greyscale PNG: a horizontal ramp over the full 0..65535 range."""
    w, h = size
    ramp = np.linspace(0, 65535, w).round().astype(np.uint16)
    Image.fromarray(np.tile(ramp, (h, 1))).save(path)
    return path


def write_alpha_png(path: Path, size: tuple[int, int] = (64, 48), hidden: tuple[int, int, int] = (255, 0, 0)) -> Path:
    """An RGBA PNG: left half opaque blue, right half fully transparent with ``hidden`` colour under the alpha."""
    w, h = size
    a = np.zeros((h, w, 4), dtype=np.uint8)
    a[:, : w // 2] = (0, 0, 255, 255)
    a[:, w // 2 :] = (*hidden, 0)
    Image.fromarray(a).save(path)
    return path


def write_strip_png(path: Path, size: tuple[int, int], colour: tuple[int, int, int] = (40, 160, 90)) -> Path:
    """A solid-colour PNG of any size: a few kB even for 20000 x 50 or 6400 x 6250 (40 MP)."""
    Image.new("RGB", size, colour).save(path, optimize=False, compress_level=9)
    return path


def long_name(tmp: Path, length: int = 300) -> Path:
    """A path whose last component is ``length`` characters (over NAME_MAX = 255: ENAMETOOLONG)."""
    return tmp / ("n" * (length - 4) + ".png")
