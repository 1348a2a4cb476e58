"""Pictures of a result: the ranked boxes in rank colours with a legend, over the relevance map or the bare image.

Two styles: ``"heat"`` blends every target's relevance map into the image (black-red-yellow-white ramp) under the
boxes; ``"outline"`` draws only the boxes on the unchanged image. Boxes are coloured by rank within their target
(rank 1 green and thickest, 2 orange, 3 blue, 4-5 magenta; the region(s) the answer used get a second, outer
line), each tagged with its region id and P(Yes); the legend maps ids to rank, target and confidence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from focus_tool.result import FocusResult, Region

logger = logging.getLogger(__name__)

OverlayStyle = Literal["heat", "outline"]
OVERLAY_STYLES: tuple[OverlayStyle, ...] = ("heat", "outline")
RANK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 220, 60),  # rank 1: green (not in the heat ramp, so it stands out on both styles)
    (255, 140, 0),  # rank 2: orange
    (30, 144, 255),  # rank 3: blue
    (230, 40, 230),  # ranks 4-5: magenta
)
MAX_RANK_DRAWN = 5  # regions ranked below this are left out unless the answer used them
_HALO = (0, 0, 0)
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def rank_colour(rank: int) -> tuple[int, int, int]:
    """The outline colour of a region of ``rank`` (1 = best for its target)."""
    return RANK_COLOURS[min(rank, len(RANK_COLOURS)) - 1]


def _heat(values: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) uint8, black-red-yellow-white ramp."""
    v = np.clip(values, 0, 1)[..., None]
    r = np.clip(v * 3, 0, 1)
    g = np.clip(v * 3 - 1, 0, 1)
    b = np.clip(v * 3 - 2, 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).astype(np.uint8)


def _font(size: int) -> _Font:
    return ImageFont.load_default(size=size)


def _heat_layer(base: Image.Image, result: FocusResult, scale: float, alpha: float) -> Image.Image:
    """``base`` with the maximum over targets of their max-normalised relevance maps blended in."""
    acc = np.zeros((base.height, base.width))
    for m in result.relevance_maps:
        vals = np.asarray(m.values, dtype=np.float64)
        vals = vals / vals.max() if vals.max() > 0 else vals
        x0, y0, x1, y1 = m.view_xyxy
        view_w, view_h = round((x1 - x0) * scale), round((y1 - y0) * scale)
        heat = Image.fromarray((vals * 255).astype(np.uint8)).resize(
            (max(view_w, 1), max(view_h, 1)), Image.Resampling.BILINEAR
        )
        layer = Image.new("L", base.size, 0)
        layer.paste(heat, (round(x0 * scale), round(y0 * scale)))
        acc = np.maximum(acc, np.asarray(layer, dtype=np.float64) / 255)
    return Image.blend(base, Image.fromarray(_heat(acc)), alpha)


def _drawn_regions(result: FocusResult) -> list[Region]:
    """The regions to draw, target by target (in result order), best first: the top ranks and every region the
    answer used.
    """
    targets = list(dict.fromkeys(r.target for r in result.regions))
    keep = [r for r in result.regions if r.rank <= MAX_RANK_DRAWN or r.selected]
    return sorted(keep, key=lambda r: (targets.index(r.target), r.rank))


def _legend_lines(
    result: FocusResult, regions: Sequence[Region], style: OverlayStyle
) -> list[tuple[str, Region | None]]:
    lines: list[tuple[str, Region | None]] = []
    for r in regions:
        conf = "not scored" if r.confidence is None else f"P(Yes) {r.confidence:.3f}"
        lines.append((f"{r.id}  rank {r.rank}  {r.target}  {conf}{'  <- answered on' if r.selected else ''}", r))
    if not regions:
        lines.append(("no regions (answered on the whole image)" if result.question else "no regions", None))
    if style == "heat" and result.relevance_maps:
        lines.append((f"heat: relevance map of {', '.join(m.target for m in result.relevance_maps)}", None))
    return lines


def _legend_corner(
    size: tuple[int, int], panel: tuple[int, int], boxes: Sequence[tuple[float, ...]], margin: int
) -> tuple[int, int]:
    """Top-left of the corner panel that hides the least box area (best boxes weigh most), top-left on ties."""
    w, h = size
    pw, ph = panel
    corners = [
        (margin, margin),
        (w - pw - margin, margin),
        (margin, h - ph - margin),
        (w - pw - margin, h - ph - margin),
    ]

    def hidden(c: tuple[int, int]) -> float:
        total = 0.0
        for i, b in enumerate(boxes):
            ix = max(0.0, min(b[2], c[0] + pw) - max(b[0], c[0]))
            iy = max(0.0, min(b[3], c[1] + ph) - max(b[1], c[1]))
            total += ix * iy / (1 + i)
        return total

    return min(corners, key=hidden)


def _draw_legend(
    canvas: Image.Image, lines: list[tuple[str, Region | None]], boxes: Sequence[tuple[float, ...]]
) -> None:
    """A white panel listing the regions (colour swatch, id, rank, target, P(Yes)) in the emptiest corner.

    The font shrinks to fit a third of the picture's width; a picture too small for a 9-px font gets no legend.
    """
    w, h = canvas.size
    size = max(11, round(max(w, h) / 75))
    while size >= 9:
        font = _font(size)
        pad, sw = max(3, size // 3), size
        text_w = max(int(font.getlength(t)) for t, _ in lines)
        pw, ph = pad * 3 + sw + text_w, pad + len(lines) * (size + pad)
        if pw <= 0.6 * w and ph <= 0.45 * h:
            break
        size -= 1
    else:
        logger.debug("overlay %dx%d too small for a legend", w, h)
        return
    x, y = _legend_corner(canvas.size, (pw, ph), boxes, margin=pad)
    panel = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    pd = ImageDraw.Draw(panel)
    pd.rectangle([x, y, x + pw, y + ph], fill=(255, 255, 255, 215), outline=(0, 0, 0, 255))
    canvas.paste(Image.alpha_composite(canvas.convert("RGBA"), panel).convert("RGB"))
    draw = ImageDraw.Draw(canvas)
    for i, (text, region) in enumerate(lines):
        ty = y + pad + i * (size + pad)
        if region is not None:
            draw.rectangle([x + pad, ty, x + pad + sw, ty + size], fill=rank_colour(region.rank), outline=_HALO)
        draw.text((x + 2 * pad + sw, ty), text, fill=(0, 0, 0), font=font)


def overlay(
    image: Image.Image,
    result: FocusResult,
    *,
    style: OverlayStyle = "heat",
    legend: bool = True,
    alpha: float = 0.45,
    max_side: int = 1600,
) -> Image.Image:
    """The image with the ranked regions drawn in rank colours, over the relevance map (``style="heat"``) or the
    unchanged image (``style="outline"``), with a legend of ids, ranks, targets and P(Yes).

    Boxes are drawn exactly at ``result.regions[i].box`` (scaled only if the picture is downscaled to ``max_side``),
    the outline inside the box; the picture has the image's size (or the downscaled size).
    """
    if style not in OVERLAY_STYLES:
        raise ValueError(f"style must be one of {OVERLAY_STYLES}, got {style!r}")
    base = image.convert("RGB")
    scale = min(1.0, max_side / max(base.size))
    if scale < 1.0:
        base = base.resize((round(base.width * scale), round(base.height * scale)), Image.Resampling.BICUBIC)
    canvas = _heat_layer(base, result, scale, alpha) if style == "heat" and result.relevance_maps else base.copy()
    regions = _drawn_regions(result)
    boxes = [tuple(v * scale for v in r.box) for r in regions]
    if legend:
        _draw_legend(canvas, _legend_lines(result, regions, style), boxes)
    draw = ImageDraw.Draw(canvas)
    unit = max(1, round(max(canvas.size) / 400))
    font = _font(max(10, round(max(canvas.size) / 90)))
    drawing = sorted(zip(regions, boxes, strict=True), key=lambda rb: -rb[0].rank)
    for region, box in drawing:  # the worst rank first, so rank 1 lies on top
        colour = rank_colour(region.rank)
        width = (2 * unit if region.rank == 1 else unit if region.rank <= 3 else max(1, unit // 2)) + 1
        x0, y0, x1, y1 = box
        draw.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], outline=_HALO, width=width + 2)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        if region.selected:  # a second line just outside: the answer used this region
            g = width + 2
            draw.rectangle([x0 - g - unit, y0 - g - unit, x1 + g + unit, y1 + g + unit], outline=colour, width=unit)
        conf = "-" if region.confidence is None else f"{region.confidence:.2f}"
        tag = f"{region.id} {conf}"
        tw, th = font.getlength(tag), font.size if isinstance(font, ImageFont.FreeTypeFont) else 11
        ty = y0 - th - 3 if y0 - th - 3 >= 0 else y0 + width
        draw.rectangle([x0, ty, x0 + tw + 4, ty + th + 3], fill=colour, outline=_HALO)
        draw.text((x0 + 2, ty + 1), tag, fill=(0, 0, 0), font=font)
    return canvas
