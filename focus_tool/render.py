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

The legend (:func:`legend_lines`) gives the question, the answer with its confidence and the option
probabilities, the status (how the question was answered, each target's state with P(Yes)), the warnings' codes,
then one line per drawn region. It goes where it hides no answer box and the fewest other boxes; when no such
place inside the picture is left, in a white margin added to the right (tall pictures) or below (wide ones), the
image keeping its pixel coordinates. The picture keeps the image's scale unless ``max_side`` asks for a smaller one.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from focus_tool.result import FocusResult, Region, ResultStatus, TargetStatus

OverlayStyle = Literal["heat", "outline"]
OVERLAY_STYLES: tuple[OverlayStyle, ...] = ("heat", "outline")
RANK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 220, 60),  # rank 1: green (not in the heat ramp, so it stands out on both styles)
    (255, 140, 0),  # rank 2: orange
    (30, 144, 255),  # rank 3: blue
    (230, 40, 230),  # ranks 4-5: magenta
)
MAX_RANK_DRAWN = 5  # regions ranked below this are left out unless the answer used them
LEGEND_CHARS = 52  # legend lines of caller text (question, answer) wrap at this many characters
QUESTION_LINES = 3  # the question is cut to this many legend lines
ANSWER_LINES = 2  # the answer likewise
OPTIONS_SHOWN = 4  # option probabilities listed, most probable first
NAME_CHARS = 24  # an option or target phrase is cut to this many characters in the legend
ANSWER_FRAME = (255, 255, 255)  # an answer box that is no drawn region's box is framed in white
_HALO = (0, 0, 0)
_MARGIN_FILL = (255, 255, 255)
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
_Rect = tuple[int, int, int, int]

_QUESTION_WORDS = {
    "answered_on_whole_image": "answered on the whole image: nothing was found",
    "not_asked": "no question asked",
}


class LegendLine(NamedTuple):
    """One legend line: its text and, for a region line, the rank whose colour its swatch shows."""

    text: str
    rank: int | None = None


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
    """The text of the overlay's legend, line by line, as :func:`overlay` draws it.

    Question (wrapped, cut to ``QUESTION_LINES``), answer with its confidence and the top option probabilities,
    the status (how the question was answered; per target its state and P(Yes)), the warnings' codes, one line per
    drawn region (id, rank, target, P(Yes)), and in the heat style what the heat shows.

    Args:
        result: the result to describe.
        style: the overlay style (the heat style adds a line about the map).
        show_unscored: whether unscored regions are drawn (and so listed).

    Returns:
        The legend's lines, top to bottom.
    """
    regions = drawn_regions(result, show_unscored=show_unscored)
    return [line.text for line in _legend(result, regions, style)]


def _legend(result: FocusResult, regions: Sequence[Region], style: OverlayStyle) -> list[LegendLine]:
    """The legend of ``result`` with ``regions`` drawn: see :func:`legend_lines`."""
    lines = [LegendLine(t) for t in _question_answer(result)]
    status = result.status
    lines.append(LegendLine(f"status: {_question_words(status, result)}"))
    for t in status.targets if status is not None else []:
        lines.append(LegendLine(f"  {_cut(t.target)}: {_target_words(t)}"))
    if status is not None and status.warnings:
        codes = ", ".join(dict.fromkeys(w.code for w in status.warnings))
        lines.append(LegendLine(f"warnings: {codes}"))
    for r in regions:
        conf = "not scored" if r.confidence is None else f"P(Yes) {r.confidence:.3f}"
        used = "  <- answer" if r.selected else ""
        lines.append(LegendLine(f"{r.id}  rank {r.rank}  {_cut(r.target)}  {conf}{used}", r.rank))
    shown = {r.id for r in regions}
    hidden = [r for r in result.regions if r.id not in shown]
    if hidden:
        unscored = sum(r.confidence is None for r in hidden)
        why = " (unscored)" if unscored == len(hidden) else f" ({unscored} unscored)" if unscored else ""
        lines.append(LegendLine(f"{len(hidden)} more region{'s' if len(hidden) > 1 else ''} not drawn{why}"))
    elif not regions:
        lines.append(LegendLine("no regions"))
    if style == "heat" and result.relevance_maps:
        maps = ", ".join(_cut(m.target) for m in result.relevance_maps)
        clear = " (none over the answer region)" if result.answer_boxes else ""
        lines.append(LegendLine(f"heat: relevance of {maps}{clear}"))
    return lines


def _question_answer(result: FocusResult) -> list[str]:
    """Question, answer + confidence, and option probabilities; the searched targets when there is no question."""
    if result.question is None:
        return [f"find: {', '.join(_cut(t) for t in result.targets) or '(nothing)'}"]
    lines = _wrap("Q: ", result.question, QUESTION_LINES)
    ev = result.answer_evidence
    answer = _wrap("A: ", result.answer, ANSWER_LINES) if result.answer is not None else ["A: (none)"]
    if ev is not None:
        answer[-1] += f"   confidence {ev.confidence:.2f}{' (low)' if ev.low else ''}"
    lines += answer
    if ev is not None and ev.options:
        ranked = sorted(ev.options.items(), key=lambda kv: -kv[1])
        probs = [f"{_cut(o)}: {p:.2f}" for o, p in ranked[:OPTIONS_SHOWN]]
        more = f" · +{len(ranked) - OPTIONS_SHOWN} more" if len(ranked) > OPTIONS_SHOWN else ""
        lines.append("   " + " · ".join(probs) + more)
    return lines


def _question_words(status: ResultStatus | None, result: FocusResult) -> str:
    """How the question was answered, in words."""
    if status is None:
        return "not reported"
    if status.question != "answered_on_region":
        return _QUESTION_WORDS.get(status.question, status.question.replace("_", " "))
    used = [r.id for r in result.regions if r.selected]
    where = f"region{'s' if len(used) > 1 else ''} {', '.join(used)}" if used else "the framed view"
    view = f" ({result.answer_view} view)" if result.answer_view not in ("crop", "none") else ""
    return f"answered on {where}{view}"


def _target_words(t: TargetStatus) -> str:
    """A target's state with its P(Yes)."""
    if t.state == "unverified":
        return "unverified (no existence check)"
    if t.confidence is None:
        return t.state.replace("_", " ")
    if t.state == "not_found":
        return f"not found, best P(Yes) {t.confidence:.3f} < {t.threshold:.2f}"
    if t.state == "ambiguous":
        return f"ambiguous, {t.regions_above} regions P(Yes) >= {t.threshold:.2f}, best {t.confidence:.3f}"
    return f"found, P(Yes) {t.confidence:.3f}"


def _wrap(prefix: str, text: str, max_lines: int) -> list[str]:
    """Caller text on one line per ``LEGEND_CHARS``, whitespace collapsed, cut to ``max_lines`` with ``...``."""
    flat = " ".join(text.split()) or "(empty)"
    indent = " " * (len(prefix) + 1)
    return textwrap.wrap(
        flat,
        width=LEGEND_CHARS,
        initial_indent=prefix,
        subsequent_indent=indent,
        max_lines=max_lines,
        placeholder=" ...",
        break_long_words=True,
    ) or [prefix + "..."]


def _cut(name: str) -> str:
    """``name`` on one line, cut to ``NAME_CHARS``."""
    flat = " ".join(name.split())
    return flat if len(flat) <= NAME_CHARS else flat[: NAME_CHARS - 3] + "..."


def _heat(values: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) uint8, black-red-yellow-white ramp."""
    v = np.clip(values, 0, 1)[..., None]
    r = np.clip(v * 3, 0, 1)
    g = np.clip(v * 3 - 1, 0, 1)
    b = np.clip(v * 3 - 2, 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).astype(np.uint8)


def _font(size: int) -> _Font:
    return ImageFont.load_default(size=size)


def _text_height(font: _Font) -> int:
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


def _pixel_rect(box: Sequence[float], scale: float, size: tuple[int, int]) -> _Rect:
    """The picture pixels [x0, x1) x [y0, y1) that ``box`` (image px) touches once scaled, clipped to ``size``."""
    w, h = size
    x0, y0, x1, y1 = (v * scale for v in box)
    return (
        min(max(math.floor(x0), 0), w),
        min(max(math.floor(y0), 0), h),
        min(max(math.ceil(x1), 0), w),
        min(max(math.ceil(y1), 0), h),
    )


def _grow(rect: _Rect, by: int) -> _Rect:
    return (rect[0] - by, rect[1] - by, rect[2] + by, rect[3] + by)


def _line_outside(
    draw: ImageDraw.ImageDraw, rect: _Rect, colour: tuple[int, int, int], width: int, size: _Rect
) -> None:
    """A ``width``-px line just outside the pixels ``rect`` = [x0, x1) x [y0, y1), clamped into ``size``."""
    x0, y0, x1, y1 = _grow(rect, width)
    bx0, by0, bx1, by1 = size
    outer = (max(x0, bx0), max(y0, by0), min(x1 - 1, bx1 - 1), min(y1 - 1, by1 - 1))
    if outer[2] >= outer[0] and outer[3] >= outer[1]:
        draw.rectangle(outer, outline=colour, width=width)


def _overlaps(a: _Rect, b: _Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _area(a: _Rect, b: _Rect) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


class _Layout(NamedTuple):
    font: _Font
    size: int  # font size, px
    pad: int
    panel: tuple[int, int]  # width, height


def _layout(lines: Sequence[LegendLine], size: int) -> _Layout:
    font = _font(size)
    pad, sw = max(3, size // 3), size
    widths = [font.getlength(t) + (sw + pad if rank is not None else 0) for t, rank in lines]
    return _Layout(font, size, pad, (2 * pad + math.ceil(max(widths)), pad + len(lines) * (size + pad)))


def _legend_place(
    grey: np.ndarray, lines: Sequence[LegendLine], keep_out: Sequence[_Rect], boxes: Sequence[_Rect]
) -> tuple[_Layout, tuple[int, int]] | None:
    """Font and top-left of a legend panel inside the picture that overlaps no ``keep_out`` rectangle and hides
    the least of ``boxes`` (best first, weighing most), then the least detail (the spread of ``grey``, the (h, w)
    picture before any line is drawn); None when no font from the picture's size down to 9 px finds such a place
    within 60 % of the width and 45 % of the height.
    """
    h, w = grey.shape
    for size in range(max(11, round(max(w, h) / 75)), 8, -1):
        lay = _layout(lines, size)
        pw, ph = lay.panel
        if pw > 0.6 * w or ph > 0.45 * h:
            continue
        m = lay.pad
        xs, ys = (m, (w - pw) // 2, w - pw - m), (m, (h - ph) // 2, h - ph - m)
        spots = [(x, y) for y in (ys[0], ys[2]) for x in (xs[0], xs[2])]  # corners first
        spots += [(xs[1], ys[0]), (xs[1], ys[2]), (xs[0], ys[1]), (xs[2], ys[1])]  # then the edges' middles
        free = [(x, y) for x, y in spots if not any(_overlaps((x, y, x + pw + 1, y + ph + 1), k) for k in keep_out)]
        if free:

            def hidden(c: tuple[int, int], pw: int = pw, ph: int = ph) -> tuple[float, float]:
                rect = (c[0], c[1], c[0] + pw + 1, c[1] + ph + 1)
                detail = float(grey[rect[1] : rect[3], rect[0] : rect[2]].std())
                return sum(_area(rect, b) / (1 + i) for i, b in enumerate(boxes)), detail

            return lay, min(free, key=hidden)
    return None


def _draw_panel(canvas: Image.Image, lay: _Layout, at: tuple[int, int], lines: Sequence[LegendLine]) -> None:
    """A white panel at ``at`` with the legend lines, region lines after a swatch of their rank colour."""
    x, y = at
    pw, ph = lay.panel
    panel = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    ImageDraw.Draw(panel).rectangle([x, y, x + pw, y + ph], fill=(255, 255, 255, 225), outline=(0, 0, 0, 255))
    canvas.paste(Image.alpha_composite(canvas.convert("RGBA"), panel).convert("RGB"))
    draw = ImageDraw.Draw(canvas)
    size, pad = lay.size, lay.pad
    for i, (text, rank) in enumerate(lines):
        ty = y + pad + i * (size + pad)
        tx = x + pad
        if rank is not None:
            draw.rectangle([tx, ty, tx + size, ty + size], fill=rank_colour(rank), outline=_HALO)
            tx += size + pad
        draw.text((tx, ty), text, fill=(0, 0, 0), font=lay.font)


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
        lines = _legend(result, regions, style)
        keep_out = [_grow(r, reach + tag_h) for r in answer_rects]  # the answer boxes, their lines and tags
        placed = _legend_place(grey, lines, keep_out, [_grow(r, reach) for r in rects])
        if placed is None:
            picture, placed = _with_margin(picture, lines)
        _draw_panel(picture, *placed, lines)
    for rect in answer_rects:  # last: the answer's pixels as the model saw them
        if rect[2] > rect[0] and rect[3] > rect[1]:
            picture.paste(base.crop(rect), rect[:2])
    return picture


def _draw_boxes(
    picture: Image.Image, regions: Sequence[Region], rects: Sequence[_Rect], answer_rects: Sequence[_Rect]
) -> tuple[int, int]:
    """Each region's lines just outside its picture rectangle and its tag; a white frame around an answer box
    that is no drawn region's box.

    Returns:
        How far the lines reach outside a box, and a tag's height, in picture px.
    """
    w, h = picture.size
    bounds = (0, 0, w, h)
    unit = max(1, round(max(w, h) / 400))
    font = _font(max(10, round(max(w, h) / 90)))
    draw = ImageDraw.Draw(picture)
    reach = 0
    for region, rect in sorted(zip(regions, rects, strict=True), key=lambda rr: -rr[0].rank):  # rank 1 on top
        colour = rank_colour(region.rank)
        width = (2 * unit if region.rank == 1 else unit if region.rank <= 3 else max(1, unit // 2)) + 1
        _line_outside(draw, rect, colour, width, bounds)
        _line_outside(draw, _grow(rect, width), _HALO, 1, bounds)
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
            _line_outside(draw, _grow(rect, unit + 1), _HALO, 1, bounds)
            reach = max(reach, unit + 2)
    return reach, _text_height(font) + 5


def _with_margin(
    picture: Image.Image, lines: Sequence[LegendLine]
) -> tuple[Image.Image, tuple[_Layout, tuple[int, int]]]:
    """``picture`` on a white canvas with room for the legend to its right (tall pictures) or below it (wide
    ones), the picture at (0, 0); and the legend's layout and top-left there.
    """
    w, h = picture.size
    lay = _layout(lines, max(11, round(max(w, h) / 75)))
    (pw, ph), m = lay.panel, lay.pad
    if h >= w:
        grown, at = (w + pw + 2 * m + 1, max(h, ph + 2 * m + 1)), (w + m, m)
    else:
        grown, at = (max(w, pw + 2 * m + 1), h + ph + 2 * m + 1), (m, h + m)
    canvas = Image.new("RGB", grown, _MARGIN_FILL)
    canvas.paste(picture, (0, 0))
    return canvas, (lay, at)


class _Label(NamedTuple):
    text: str
    colour: tuple[int, int, int]
    font: _Font


def _tag(
    draw: ImageDraw.ImageDraw,
    label: _Label,
    rect: _Rect,
    ext: int,
    bounds: _Rect,
    *,
    inside_ok: bool,
    keep_out: Sequence[_Rect],
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
    free = [ty for ty in spots if not any(_overlaps((tx, ty, tx + tw + 1, ty + lh + 1), k) for k in keep_out)]
    if free:
        ty = free[0]
        draw.rectangle([tx, ty, tx + tw, ty + lh], fill=label.colour, outline=_HALO)
        draw.text((tx + 2, ty + 1), label.text, fill=(0, 0, 0), font=label.font)
