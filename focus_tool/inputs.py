"""The one image decoder and text check of every surface (CLI, Python API, LangChain tool, MCP server).

Every rejection is one :class:`InputRejected` line saying what is wrong and what to do; caller text (paths) is
quoted and truncated by :func:`focus_tool.errors.quote_text`. :func:`load_image` (paths, bytes, PIL images) and
:func:`decode_image_bytes` (what the server calls) apply one :class:`InputPolicy`:

- formats: :data:`SAFE_FORMATS` only (never EPS, whose decoder runs Ghostscript), tried from the bytes, not the name;
- size from the header, before any pixel is decoded: both sides >= ``min_side_px``, W * H <= ``max_pixels``, the long
  side <= ``max_long_side_px`` and long / short <= ``max_aspect``; Pillow's decompression-bomb error is caught;
- PNG metadata bombs (zTXt / iTXt / iCCP chunks that inflate past Pillow's ``PngImagePlugin.MAX_TEXT_CHUNK`` or
  ``MAX_TEXT_MEMORY``) are refused in one line;
- pixels: the first frame, EXIF-oriented (the frame every returned box uses), integer and float greyscale scaled to
  8 bits (16-bit ``>> 8``, floats in [0, 1] x 255; Pillow's own conversion clips them), transparency composited over
  ``background_rgb`` (a neutral mid grey by default) instead of analysing what lies under the alpha, then RGB;
- files are opened non-blocking and ``fstat``-ed before a byte is read: a FIFO or device is refused at once.

Why the long side and the aspect are capped although the pixel count is: a model view pads the image to a square of
its long side before resizing, so a 1.5 kB 20000 x 50 PNG (1 MP) became a 400 MP canvas (+5.5 GB).
:func:`focus_tool.ops.images.pad_to_square` now shrinks such images before padding; the caps bound what is left
(the decoded image itself) and keep every backbone's resizer in range (Qwen2.5-VL's ``smart_resize`` refuses
aspects above 200). Defaults: long side 16384 px and aspect 64 (a 16384 x 256 strip, a 2048 x 32 one): wider than
any panorama or receipt a crop is asked about; beyond them resize or split the image.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import stat
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from focus_tool.errors import InputRejected, quote_text

SAFE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # never EPS (Ghostscript)
NEUTRAL_GREY: tuple[int, int, int] = (128, 128, 128)
_WORDS = re.compile(r"[^\W_]")  # a letter or digit in any script: a text without one has no words
PATH_QUOTE_CHARS = 200  # paths are quoted longer than other caller text: the file name is at their end


@dataclass(frozen=True, kw_only=True)
class InputPolicy:
    """Limits on what an engine accepts (the same defaults on every surface; the server may lower the byte caps).

    Attributes:
        min_side_px: smaller images have nothing to zoom into.
        max_pixels: largest W * H decoded, checked from the header.
        max_long_side_px: largest width or height (a view pads to a square of this side before resizing).
        max_aspect: largest long side / short side.
        max_file_bytes: largest image file read from disk.
        max_question_chars: longest question or target.
        background_rgb: colour transparent pixels are composited over.
    """

    min_side_px: int = 32
    max_pixels: int = 40_000_000
    max_long_side_px: int = 16_384
    max_aspect: float = 64.0
    max_file_bytes: int = 20_000_000
    max_question_chars: int = 2000
    background_rgb: tuple[int, int, int] = NEUTRAL_GREY

    def __post_init__(self) -> None:
        for name in ("min_side_px", "max_pixels", "max_long_side_px", "max_file_bytes", "max_question_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.max_aspect >= 1.0:
            raise ValueError(f"max_aspect must be >= 1, got {self.max_aspect}")


def check_size(size: tuple[int, int], policy: InputPolicy, what: str = "the image") -> None:
    """Refuse an image size outside the policy (called on the header's size, before decoding)."""
    w, h = size
    fix = "resize it (or crop the part you ask about)"
    if min(w, h) < policy.min_side_px:
        raise InputRejected(f"{what} is {w}x{h} px; both sides must be at least {policy.min_side_px} px; upscale it")
    if w * h > policy.max_pixels:
        raise InputRejected(f"{what} is {w}x{h} = {w * h:,} px; the limit is {policy.max_pixels:,} px; {fix}")
    if max(w, h) > policy.max_long_side_px:
        raise InputRejected(f"{what} is {w}x{h} px; the long side may be at most {policy.max_long_side_px} px; {fix}")
    if max(w, h) > policy.max_aspect * min(w, h):
        raise InputRejected(
            f"{what} is {w}x{h} px, an aspect of 1:{max(w, h) / min(w, h):.0f}; the limit is "
            f"1:{policy.max_aspect:g}; crop or split it"
        )


def _chunk_bomb(e: Exception) -> bool:
    text = str(e)
    return "MAX_TEXT_CHUNK" in text or "Too much memory used in text chunks" in text


@contextlib.contextmanager
def _decoding(policy: InputPolicy, what: str) -> Iterator[None]:
    """Turn every decoder failure inside the block into one InputRejected line."""
    with warnings.catch_warnings():
        # our own cap (checked from the header) is below Pillow's warning threshold; its >2x error is caught
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        except InputRejected:
            raise
        except Image.DecompressionBombError:
            raise InputRejected(
                f"{what} declares too many pixels to decode safely (the limit is {policy.max_pixels:,} px); resize it"
            ) from None
        except UnidentifiedImageError:
            raise InputRejected(
                f"{what} is not a supported image; allowed formats: {', '.join(SAFE_FORMATS)}; "
                "convert it to PNG or JPEG"
            ) from None
        except (ValueError, SyntaxError, OSError, EOFError, IndexError, TypeError, zlib.error) as e:
            if _chunk_bomb(e):
                raise InputRejected(
                    f"{what} has PNG metadata (zTXt/iTXt/iCCP chunks) that inflates past Pillow's safety limit of "
                    f"{PngImagePlugin.MAX_TEXT_CHUNK:,} bytes per chunk; re-save the image without metadata"
                ) from None
            raise InputRejected(
                f"{what} cannot be decoded ({type(e).__name__}); the file may be truncated or corrupt; re-save it"
            ) from None


def check_image_header(data: bytes, policy: InputPolicy | None = None, *, what: str = "the image") -> tuple[int, int]:
    """Parse only the header (and a PNG's chunks before its pixels) and check format and size; returns (W, H).

    Cheap (no pixel is decoded): the server runs it before a caller queues for the model.
    """
    policy = policy or InputPolicy()
    with _decoding(policy, what), Image.open(io.BytesIO(data), formats=list(SAFE_FORMATS)) as im:
        check_size(im.size, policy, what)
        return im.size
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: the context manager may swallow)


def decode_image_bytes(data: bytes, policy: InputPolicy | None = None, *, what: str = "the image") -> Image.Image:
    """Decode image bytes under ``policy``: allowed formats, caps from the header, then :func:`normalize_image`.

    Args:
        data: the encoded file.
        policy: formats and caps (default :class:`InputPolicy`).
        what: how messages name the image (already quoted where it is caller text).

    Returns:
        An RGB image in the EXIF-transposed frame.
    """
    policy = policy or InputPolicy()
    with _decoding(policy, what):
        im = Image.open(io.BytesIO(data), formats=list(SAFE_FORMATS))  # parses the header (and early chunks)
        check_size(im.size, policy, what)
        im.load()  # the first frame: open() leaves a multi-frame file (GIF, APNG, TIFF) on frame 0
        return normalize_image(im, policy, what=what)
    raise AssertionError("unreachable")  # pragma: no cover


def normalize_image(image: Image.Image, policy: InputPolicy | None = None, *, what: str = "the image") -> Image.Image:
    """EXIF-orient, scale 16-bit greyscale, composite transparency over ``policy.background_rgb``, convert to RGB.

    ``image`` may be modified in place (EXIF orientation); the result may be ``image`` itself when it is RGB already.
    Integer and float greyscale (modes I;16, I, F) is scaled to 8 bits by :func:`_grey8`.
    """
    policy = policy or InputPolicy()
    check_size(image.size, policy, what)
    with contextlib.suppress(ValueError, SyntaxError, OSError, KeyError, TypeError):  # unreadable EXIF: as stored
        ImageOps.exif_transpose(image, in_place=True)  # no copy; the transposed frame is the one boxes use
    if image.mode.startswith("I") or image.mode == "F":  # I;16*, I, F: one band of wide samples
        image = Image.fromarray(_grey8(np.asarray(image)), mode="L")  # (H, W)
    try:
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (*policy.background_rgb, 255))
            background.alpha_composite(rgba)
            del rgba
            return background.convert("RGB")
        return image if image.mode == "RGB" else image.convert("RGB")
    except ValueError:  # a mode Pillow cannot turn into RGB (LAB, HSV, ...)
        raise InputRejected(
            f"{what} has pixel mode {image.mode}, which has no RGB conversion; save it as RGB"
        ) from None


def _grey8(a: np.ndarray) -> np.ndarray:
    """One greyscale band of integer or float samples as 8 bits, keeping its range: floats in [0, 1] are x 255 (a
    float TIFF; floats up to 255 are kept, wider ones divided by their maximum), integers are 16-bit samples and
    ``>> 8`` (Pillow's own conversion clips them to white; wider ones divided by their maximum); NaN and negative
    values are black.
    """
    if a.dtype.kind == "f":
        f = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(f.max(initial=0.0))
        scale = 255.0 if top <= 1.0 else 1.0 if top <= 255.0 else 255.0 / top
        return np.clip(np.rint(f * scale), 0, 255).astype(np.uint8)
    i = np.clip(a.astype(np.int64), 0, None)
    top = int(i.max(initial=0))
    return (i >> 8 if top <= 65535 else i * 255 // top).astype(np.uint8)


def read_image_file(path: str | Path, policy: InputPolicy | None = None) -> bytes:
    """The bytes of an image file, refusing (one line) a missing, unreadable, oversized or non-regular file."""
    policy = policy or InputPolicy()
    shown = quote_text(str(path), PATH_QUOTE_CHARS)
    try:  # O_NONBLOCK: a FIFO or device is refused at the fstat below instead of blocking the open
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InputRejected(f"{shown} is not a regular file; give the path of an image file")
            if info.st_size > policy.max_file_bytes:
                raise InputRejected(
                    f"{shown} is {info.st_size:,} bytes; the limit is {policy.max_file_bytes:,}; "
                    "resize or recompress it"
                )
            data = f.read(policy.max_file_bytes + 1)
    except FileNotFoundError:
        raise InputRejected(f"image file not found: {shown}; check the path") from None
    except IsADirectoryError:
        raise InputRejected(f"{shown} is not a file (a directory); give the path of an image file") from None
    except PermissionError:
        raise InputRejected(f"cannot read {shown}: permission denied; check the file's permissions") from None
    except ValueError:  # a NUL byte in the path
        raise InputRejected(f"{shown} contains a NUL byte; pass a plain path") from None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise InputRejected(
                f"cannot open {shown}: the file name is too long for the file system; rename the file"
            ) from None
        raise InputRejected(f"cannot read {shown} ({e.strerror or type(e).__name__}); check the path") from None
    if len(data) > policy.max_file_bytes:  # the file grew after the stat
        raise InputRejected(f"{shown} is larger than {policy.max_file_bytes:,} bytes; resize or recompress it")
    return data


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1) or 1)
    except (ValueError, SyntaxError, OSError, TypeError):
        return 1


@dataclass(frozen=True)
class AdmittedImage:
    """An image an entry (CLI, Python API, agent service) has decoded and checked with :func:`load_image` or
    :func:`decode_image_bytes` under its own :class:`InputPolicy`: RGB, EXIF-oriented, within the limits. The
    pipeline runs on it as it is, so the limits have one owner: the policy of the entry the image came in through.
    """

    image: Image.Image

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) px."""
        return self.image.size


ImageInput = str | Path | bytes | Image.Image | AdmittedImage
"""What the Python API takes as an image: a path, encoded bytes, a PIL image, or an already admitted image."""


def load_image(source: object, policy: InputPolicy | None = None) -> Image.Image:
    """The one image loader: a path, encoded bytes or a PIL image -> a checked RGB image; raises InputRejected
    (also for any other type, and for a PIL image whose pixels cannot be read). An :class:`AdmittedImage` is
    returned as it is.
    """
    policy = policy or InputPolicy()
    if isinstance(source, AdmittedImage):
        return source.image
    if isinstance(source, Image.Image):
        with _decoding(policy, "the image"):
            check_size(source.size, policy)
            source.load()  # a lazily opened file: its pixels are read (and refused if truncated) here, not later
            if source.mode == "RGB" and "transparency" not in source.info and _orientation(source) == 1:
                return source  # nothing to change: no copy (a 40 MP image is 160 MB in Pillow)
            return normalize_image(source.copy(), policy)  # a copy: normalize_image may orient in place
        raise AssertionError("unreachable")  # pragma: no cover
    if isinstance(source, bytes | bytearray | memoryview):
        return decode_image_bytes(bytes(source), policy)
    if not isinstance(source, str | Path):
        raise InputRejected(
            f"the image must be a file path, encoded bytes or a PIL image, got {type(source).__name__}; "
            "for a numpy array pass PIL.Image.fromarray(array)"
        )
    path = Path(source).expanduser() if str(source).startswith("~") else Path(source)
    return decode_image_bytes(read_image_file(path, policy), policy, what=quote_text(str(source), PATH_QUOTE_CHARS))


def check_text(text: object, what: str, policy: InputPolicy | None = None) -> str:
    """Strip and validate a question, target or option; raises InputRejected when not text, empty, wordless (no
    letter or digit) or too long.
    """
    policy = policy or InputPolicy()
    if text is not None and not isinstance(text, str):
        raise InputRejected(f"the {what} must be text, got {type(text).__name__}")
    if text is None or not text.strip():
        raise InputRejected(f"the {what} is empty; ask about something in the image")
    if not _WORDS.search(text):
        raise InputRejected(f"the {what} {quote_text(text)} has no words; ask about something in the image")
    if len(text) > policy.max_question_chars:
        raise InputRejected(
            f"the {what} has {len(text)} characters; the limit is {policy.max_question_chars}; shorten it"
        )
    return " ".join(text.split())


def parse_options(text: str | None, policy: InputPolicy | None = None) -> list[str] | None:
    """Multiple-choice options from ``'white|black|cyan'``: None when absent; refuses empty or single options."""
    if text is None:
        return None
    policy = policy or InputPolicy()
    options = [" ".join(o.split()) for o in text.split("|")]
    if any(not o for o in options) or len(options) < 2:
        raise InputRejected(
            f"--options {quote_text(text)} needs at least two non-empty options separated by '|', "
            "e.g. 'white|black|cyan'"
        )
    if len(text) > policy.max_question_chars:
        raise InputRejected(f"--options has {len(text)} characters; the limit is {policy.max_question_chars}")
    return options


def check_output_path(
    path: Path,
    *,
    inputs: tuple[str | Path, ...] = (),
    force: bool = False,
    flag: str = "--overlay",
    suffix: str = ".png",
) -> Path:
    """Refuse an output file that cannot or should not be written, before any work is done.

    Refused: a name without ``suffix``, a directory, an unwritable folder, an existing file unless ``force``, and any
    of ``inputs`` (never overwritten, even with ``force``). Creates missing parent folders. Every refusal is one line
    naming ``flag``, the option the path came from (``--overlay`` takes a ``.png``, ``--html`` a ``.html``).
    """
    shown = quote_text(str(path), PATH_QUOTE_CHARS)
    if path.suffix.lower() != suffix:
        raise InputRejected(f"{flag} must name a {suffix} file, got {shown}")
    target = Path(os.path.abspath(path))
    for source in inputs:
        try:
            same = target == Path(os.path.abspath(source)) or (target.exists() and os.path.samefile(target, source))
        except OSError:
            same = False
        if same:
            raise InputRejected(f"{flag} {shown} is the input image; write the {flag.lstrip('-')} to another file")
    try:
        if target.is_dir():
            raise InputRejected(f"{flag} {shown} is a directory; name a {suffix} file inside it")
        if target.exists() and not force:
            raise InputRejected(f"{flag} {shown} exists; pass --force to replace it, or name another file")
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputRejected(
            f"cannot create the folder of {flag} {shown} ({e.strerror or type(e).__name__}); name another file"
        ) from None
    if not os.access(target.parent, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise InputRejected(f"{flag} {shown} is not writable (permission denied); name another file")
    return target
