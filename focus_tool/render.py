"""Pictures of a result that read on their own: the question, the answer and how sure it is, the status, the ranked
boxes in rank colours, over the relevance map or the bare image.

Two styles: ``"heat"`` (the default) blends every target's relevance map into the image (black-red-yellow-white
ramp); ``"outline"`` draws the boxes on the unchanged image. In both, the region the answer used stays as the
model saw it: the pixels inside every box of ``result.answer_boxes`` equal the image's (no heat, no line, no label,
no legend there), so the map shows around it. Boxes are coloured by rank within their target (rank 1 green and
thickest, 2 orange, 3 blue, 4-5 magenta), each outline drawn just outside its box (the box's own pixels untouched;
at the picture's edge the line of a box the answer did not use falls inside it); the region(s) the answer used get
a second, outer line. Each box is tagged with its region id and P(Yes). Regions that were never scored (P(Yes)
None) are left out unless ``show_unscored=True``; the regions the answer used are always drawn.

This module owns the styles, the rank colours, which regions are drawn (:func:`drawn_regions`), the heat layer,
the boxes and their tags, and :func:`overlay`, which puts them together. The legend's text, place and panel are
focus_tool/render_legend.py's; :func:`legend_lines` gives its text as :func:`overlay` draws it. The picture keeps
the image's scale unless ``max_side`` asks for a smaller one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from focus_tool.render_legend import (
    HALO,
    Font,
    Rect,
    draw_legend,
    make_legend,
    overlaps,
    picture_font,
    place_legend,
    with_legend_margin,
)
from focus_tool.result import FocusResult, Region

OverlayStyle = Literal["heat", "outline"]
OVERLAY_STYLES: tuple[OverlayStyle, ...] = ("heat", "outline")
RANK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 220, 60),  # rank 1: green (not in the heat ramp, so it stands out on both styles)
    (255, 140, 0),  # rank 2: orange
    (30, 144, 255),  # rank 3: blue
    (230, 40, 230),  # ranks 4-5: magenta
)
MAX_RANK_DRAWN = 5  # regions ranked below this are left out unless the answer used them
ANSWER_FRAME = (255, 255, 255)  # an answer box that is no drawn region's box is framed in white


def rank_colour(rank: int) -> tuple[int, int, int]:
    """The outline colour of a region of ``rank`` (1 = best for its target)."""
    return RANK_COLOURS[min(rank, len(RANK_COLOURS)) - 1]


def drawn_regions(result: FocusResult, *, show_unscored: bool = False) -> list[Region]:
    """The regions an overlay draws, target by target (in result order), best rank first.

    Args:
        result: the result to draw.
        show_unscored: also draw the regions whose P(Yes) is None (never scored).

    Returns:
        Every region the answer used, and the scored regions (all of them with ``show_unscored``) ranked up to
        ``MAX_RANK_DRAWN``.
    """
    targets = list(dict.fromkeys(r.target for r in result.regions))
    keep = [
        r
        for r in result.regions
        if r.selected or (r.rank <= MAX_RANK_DRAWN and (show_unscored or r.confidence is not None))
    ]
    return sorted(keep, key=lambda r: (targets.index(r.target), r.rank))


def legend_lines(result: FocusResult, *, style: OverlayStyle = "heat", show_unscored: bool = False) -> list[str]:
    """The text of the overlay's legend, line by line, as :func:`overlay` draws it: question, answer and confidence,
    status, warnings, one line per region of :func:`drawn_regions`, and in the heat style what the heat shows
    (:func:`focus_tool.render_legend.make_legend` says what each line holds).

    Args:
        result: the result to describe.
        style: the overlay style (the heat style adds a line about the map).
        show_unscored: whether unscored regions are drawn (and so listed).

    Returns:
        The legend's lines, top to bottom.
    """
    regions = drawn_regions(result, show_unscored=show_unscored)
    return [line.text for line in make_legend(result, regions, heat=style == "heat")]


def _heat(values: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) uint8, black-red-yellow-white ramp."""
    v = np.clip(values, 0, 1)[..., None]
    r = np.clip(v * 3, 0, 1)
    g = np.clip(v * 3 - 1, 0, 1)
    b = np.clip(v * 3 - 2, 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).astype(np.uint8)


def _text_height(font: Font) -> int:
    bbox = font.getbbox("Ag")
    return int(bbox[3])


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


def _pixel_rect(box: Sequence[float], scale: float, size: tuple[int, int]) -> Rect:
    """The picture pixels [x0, x1) x [y0, y1) that ``box`` (image px) touches once scaled, clipped to ``size``."""
    w, h = size
    x0, y0, x1, y1 = (v * scale for v in box)
    return (
        min(max(math.floor(x0), 0), w),
        min(max(math.floor(y0), 0), h),
        min(max(math.ceil(x1), 0), w),
        min(max(math.ceil(y1), 0), h),
    )


def _grow(rect: Rect, by: int) -> Rect:
    return (rect[0] - by, rect[1] - by, rect[2] + by, rect[3] + by)


def _line_outside(draw: ImageDraw.ImageDraw, rect: Rect, colour: tuple[int, int, int], width: int, size: Rect) -> None:
    """A ``width``-px line just outside the pixels ``rect`` = [x0, x1) x [y0, y1), clamped into ``size``."""
    x0, y0, x1, y1 = _grow(rect, width)
    bx0, by0, bx1, by1 = size
    outer = (max(x0, bx0), max(y0, by0), min(x1 - 1, bx1 - 1), min(y1 - 1, by1 - 1))
    if outer[2] >= outer[0] and outer[3] >= outer[1]:
        draw.rectangle(outer, outline=colour, width=width)


def overlay(
    image: Image.Image,
    result: FocusResult,
    *,
    style: OverlayStyle = "heat",
    legend: bool = True,
    show_unscored: bool = False,
    alpha: float = 0.45,
    max_side: int | None = None,
) -> Image.Image:
    """The picture of ``result`` over ``image``: boxes in rank colours over the relevance map (``"heat"``) or the
    unchanged image (``"outline"``), and a legend (:func:`legend_lines`).

    Inside every answer box (``result.answer_boxes``) the picture's pixels are the image's: heat, lines, tags and
    legend stay outside it. At the default scale that is exact in image pixels (``picture[y0:y1, x0:x1] ==
    image[y0:y1, x0:x1]``); with ``max_side`` it holds for the image downscaled (bicubic) to the picture's size,
    over the picture pixels the scaled box touches.

    Args:
        image: the image the result was made from (after EXIF transpose; its size is ``result.image_wh``).
        result: the result to draw.
        style: ``"heat"`` or ``"outline"``.
        legend: draw the legend.
        show_unscored: also draw the regions that were never scored (P(Yes) None).
        alpha: the heat layer's opacity.
        max_side: downscale the picture so that its longer side is at most this (None: the image's scale).

    Returns:
        An RGB picture; the image's size (or the downscaled one), wider or taller by a legend margin when no place
        inside it leaves the answer boxes free. Image pixel (x, y) lies at picture (x, y) (times the scale).

    Raises:
        ValueError: an unknown ``style``, or an image whose size is not ``result.image_wh``.
    """
    if style not in OVERLAY_STYLES:
        raise ValueError(f"style must be one of {OVERLAY_STYLES}, got {style!r}")
    if image.size != tuple(result.image_wh):
        raise ValueError(
            f"image is {image.width}x{image.height} px but the result was made on {result.image_wh[0]}x"
            f"{result.image_wh[1]} px; pass the image the result was made from (after EXIF transpose)"
        )
    base = image.convert("RGB")
    scale = 1.0 if max_side is None else min(1.0, max_side / max(base.size))
    if scale < 1.0:
        base = base.resize((round(base.width * scale), round(base.height * scale)), Image.Resampling.BICUBIC)
    picture = _heat_layer(base, result, scale, alpha) if style == "heat" and result.relevance_maps else base.copy()
    grey = np.asarray(picture.convert("L"), dtype=np.float64)  # (h, w), where the legend would hide detail
    regions = drawn_regions(result, show_unscored=show_unscored)
    rects = [_pixel_rect(r.box, scale, base.size) for r in regions]
    answer_rects = [_pixel_rect(b, scale, base.size) for b in result.answer_boxes]
    reach, tag_h = _draw_boxes(picture, regions, rects, answer_rects)
    if legend:
        lines = make_legend(result, regions, heat=style == "heat")
        keep_out = [_grow(r, reach + tag_h) for r in answer_rects]  # the answer boxes, their lines and tags
        placed = place_legend(grey, lines, keep_out, [_grow(r, reach) for r in rects])
        if placed is None:
            picture, placed = with_legend_margin(picture, lines)
        draw_legend(picture, *placed, lines, rank_colour)
    for rect in answer_rects:  # last: the answer's pixels as the model saw them
        if rect[2] > rect[0] and rect[3] > rect[1]:
            picture.paste(base.crop(rect), rect[:2])
    return picture


def _draw_boxes(
    picture: Image.Image, regions: Sequence[Region], rects: Sequence[Rect], answer_rects: Sequence[Rect]
) -> tuple[int, int]:
    """Each region's lines just outside its picture rectangle and its tag; a white frame around an answer box
    that is no drawn region's box.

    Returns:
        How far the lines reach outside a box, and a tag's height, in picture px.
    """
    w, h = picture.size
    bounds = (0, 0, w, h)
    unit = max(1, round(max(w, h) / 400))
    font = picture_font(max(10, round(max(w, h) / 90)))
    draw = ImageDraw.Draw(picture)
    reach = 0
    for region, rect in sorted(zip(regions, rects, strict=True), key=lambda rr: -rr[0].rank):  # rank 1 on top
        colour = rank_colour(region.rank)
        width = (2 * unit if region.rank == 1 else unit if region.rank <= 3 else max(1, unit // 2)) + 1
        _line_outside(draw, rect, colour, width, bounds)
        _line_outside(draw, _grow(rect, width), HALO, 1, bounds)
        ext = width + 1
        if region.selected:  # a second line further out: the answer used this region
            _line_outside(draw, _grow(rect, ext + unit), colour, unit, bounds)
            ext += 2 * unit
        reach = max(reach, ext)
        conf = "-" if region.confidence is None else f"{region.confidence:.2f}"
        label = _Label(f"{region.id} {conf}", colour, font)
        _tag(draw, label, rect, ext, bounds, inside_ok=rect not in answer_rects, keep_out=answer_rects)
    framed = set(rects)
    for rect in answer_rects:
        if rect not in framed:  # an answer view that is no drawn region (e.g. a union of boxes)
            _line_outside(draw, rect, ANSWER_FRAME, unit + 1, bounds)
            _line_outside(draw, _grow(rect, unit + 1), HALO, 1, bounds)
            reach = max(reach, unit + 2)
    return reach, _text_height(font) + 5


class _Label(NamedTuple):
    text: str
    colour: tuple[int, int, int]
    font: Font


def _tag(
    draw: ImageDraw.ImageDraw,
    label: _Label,
    rect: Rect,
    ext: int,
    bounds: Rect,
    *,
    inside_ok: bool,
    keep_out: Sequence[Rect],
) -> None:
    """``label`` above the box's lines (``ext`` px out), else below them, else (if ``inside_ok``) inside, wherever
    it overlaps no ``keep_out`` rectangle; no label when none is left.
    """
    x0, y0, _, y1 = rect
    tw = math.ceil(label.font.getlength(label.text)) + 4
    lh = _text_height(label.font) + 4
    tx = min(max(x0 - ext, bounds[0]), max(bounds[2] - tw - 1, bounds[0]))
    spots = [ty for ty in (y0 - ext - lh, y1 + ext) if bounds[1] <= ty and ty + lh < bounds[3]]
    spots += [y0 + ext] if inside_ok else []
    free = [ty for ty in spots if not any(overlaps((tx, ty, tx + tw + 1, ty + lh + 1), k) for k in keep_out)]
    if free:
        ty = free[0]
        draw.rectangle([tx, ty, tx + tw, ty + lh], fill=label.colour, outline=HALO)
        draw.text((tx + 2, ty + 1), label.text, fill=(0, 0, 0), font=label.font)
