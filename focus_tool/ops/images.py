"""Pure image helpers (PIL in, PIL out). Geometry bookkeeping lives in :mod:`focus_tool.grid`."""

from __future__ import annotations

from PIL import Image

CLIP_MEAN_RGB = (122, 116, 104)  # round(255 * (0.48145466, 0.4578275, 0.40821073)), LLaVA's pad colour
MAX_PAD_SIDE_PX = 2048
"""Largest square :func:`pad_to_square` builds: a longer image is shrunk to this long side first (a 20000 x 50 strip
padded as it is would be a 400 MP canvas, 1.6 GB in Pillow; a 40 MP photo's 4096-px square and its resize buffers
cost +160 MB more than a 2048-px one). Every input it feeds is far smaller (LLaVA-1.5: 336 px, the embedded model:
96 px), so the shrink changes only the resampling path; images up to this side (every synthetic benchmark image)
are padded exactly as before."""


def shrink_long_side(image: Image.Image, max_side: int = MAX_PAD_SIDE_PX) -> Image.Image:
    """``image`` itself when max(W, H) <= ``max_side``, else resized (bicubic, aspect kept, sides >= 1 px) to that
    long side: for a view a processor pads to a square of the long side at full resolution.
    """
    w, h = image.size
    s = max(w, h)
    if s <= max_side:
        return image
    scale = max_side / s
    size = (max(1, min(max_side, round(w * scale))), max(1, min(max_side, round(h * scale))))
    return image.resize(size, Image.Resampling.BICUBIC)


def pad_to_square(
    image: Image.Image, fill: tuple[int, int, int] = CLIP_MEAN_RGB, *, max_side: int = MAX_PAD_SIDE_PX
) -> Image.Image:
    """Centre ``image`` on a square canvas of side max(W, H) filled with ``fill`` (LLaVA-1.5 "pad" mode).

    The offsets are ((S - W) // 2, (S - H) // 2), the same as ``LlavaImageProcessor.pad_to_square``. When
    max(W, H) > ``max_side`` the image is first resized (bicubic, aspect kept, short side >= 1 px) to a long side of
    ``max_side``, so the square never exceeds ``max_side``^2 px; the grid over the square keeps its proportions
    (offsets then differ from the unshrunk ones by under one original pixel per ``S / max_side``).
    """
    image = shrink_long_side(image, max_side)
    w, h = image.size
    s = max(w, h)
    if w == h:
        return image
    canvas = Image.new("RGB", (s, s), fill)
    canvas.paste(image, ((s - w) // 2, (s - h) // 2))
    return canvas
