"""Pure image helpers (PIL in, PIL out). Geometry bookkeeping lives in :mod:`focus_tool.grid`."""

from __future__ import annotations

from PIL import Image

CLIP_MEAN_RGB = (122, 116, 104)  # round(255 * (0.48145466, 0.4578275, 0.40821073)), LLaVA's pad colour


def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = CLIP_MEAN_RGB) -> Image.Image:
    """Centre ``image`` on a square canvas of side max(W, H) filled with ``fill`` (LLaVA-1.5 "pad" mode).

    The offsets are ((S - W) // 2, (S - H) // 2), the same as ``LlavaImageProcessor.pad_to_square``.
    """
    w, h = image.size
    if w == h:
        return image
    s = max(w, h)
    canvas = Image.new("RGB", (s, s), fill)
    canvas.paste(image, ((s - w) // 2, (s - h) // 2))
    return canvas
