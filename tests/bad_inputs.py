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
