"""Safe image loading and input validation: every rejection is an :class:`InputRejected` naming the fix."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from focus_tool.errors import InputRejected


@dataclass(frozen=True, kw_only=True)
class InputPolicy:
    """Limits on what an engine accepts."""

    min_side_px: int = 32  # smaller images have nothing to zoom into
    max_pixels: int = 100_000_000  # Pillow's decompression-bomb guard is set to this
    max_question_chars: int = 2000


def load_image(source: str | Path | Image.Image, policy: InputPolicy | None = None) -> Image.Image:
    """Open, EXIF-transpose, convert to RGB and check the size of an image; raises InputRejected."""
    policy = policy or InputPolicy()
    if isinstance(source, Image.Image):
        image = source
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise InputRejected(f"image file not found: {path}; check the path")
        if not path.is_file():
            raise InputRejected(f"{path} is not a file; give the path of an image file")
        old = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = policy.max_pixels
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    _check_pixels(im.size, policy)
                    im.load()
                    image = im.copy()
        except UnidentifiedImageError:
            raise InputRejected(f"{path} is not an image Pillow can read; give a PNG, JPEG, WebP or similar") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputRejected(f"{path} has more than {policy.max_pixels:,} pixels; downscale it first") from None
        except PermissionError:
            raise InputRejected(f"cannot read {path}: permission denied") from None
        except OSError as e:
            raise InputRejected(f"cannot read {path}: {e}; the file may be truncated or corrupt") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old
    image = ImageOps.exif_transpose(image) or image
    _check_pixels(image.size, policy)
    return image.convert("RGB")


def _check_pixels(size: tuple[int, int], policy: InputPolicy) -> None:
    w, h = size
    if min(w, h) < policy.min_side_px:
        raise InputRejected(f"image is {w}x{h} px; both sides must be at least {policy.min_side_px} px")
    if w * h > policy.max_pixels:
        raise InputRejected(f"image is {w}x{h} = {w * h:,} px, above the cap of {policy.max_pixels:,}; downscale it")


def check_text(text: str | None, what: str, policy: InputPolicy | None = None) -> str:
    """Strip and validate a question or target; raises InputRejected when empty or too long."""
    policy = policy or InputPolicy()
    if text is None or not text.strip():
        raise InputRejected(f"the {what} is empty; ask about something in the image")
    if len(text) > policy.max_question_chars:
        raise InputRejected(f"the {what} has {len(text)} characters; the limit is {policy.max_question_chars}")
    return " ".join(text.split())
