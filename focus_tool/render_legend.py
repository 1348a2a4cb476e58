"""The legend of an overlay picture (:func:`focus_tool.render.overlay`): its text, its place and its panel.

The legend (:func:`make_legend`) gives the question, the answer with its confidence and the option probabilities, the
status (how the question was answered, each target's state with P(Yes)), the warnings' codes, then one line per
drawn region. It goes where it hides no answer box and the fewest other boxes (:func:`place_legend`); when no such
place inside the picture is left, in a white margin added to the right (tall pictures) or below (wide ones), the
image keeping its pixel coordinates (:func:`with_legend_margin`). :func:`draw_legend` draws the panel.

Which regions are drawn and their rank colours are focus_tool/render.py's; this module also owns the pictures'
font, the black halo and the rectangle overlap test that render.py's box tags share.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from focus_tool.result import FocusResult, Region, ResultStatus, TargetStatus

LEGEND_CHARS = 52  # legend lines of caller text (question, answer) wrap at this many characters
QUESTION_LINES = 3  # the question is cut to this many legend lines
ANSWER_LINES = 2  # the answer likewise
OPTIONS_SHOWN = 4  # option probabilities listed, most probable first
NAME_CHARS = 24  # an option or target phrase is cut to this many characters in the legend
HALO = (0, 0, 0)  # the edge of every coloured line, tag and swatch
_MARGIN_FILL = (255, 255, 255)
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Rect = tuple[int, int, int, int]  # picture pixels [x0, x1) x [y0, y1)

_QUESTION_WORDS = {
    "answered_on_whole_image": "answered on the whole image: nothing was found",
    "not_asked": "no question asked",
}


class LegendLine(NamedTuple):
    """One legend line: its text and, for a region line, the rank whose colour its swatch shows."""

    text: str
    rank: int | None = None


def make_legend(result: FocusResult, regions: Sequence[Region], *, heat: bool) -> list[LegendLine]:
    """The legend of ``result`` with ``regions`` drawn, top to bottom.

    Question (wrapped, cut to ``QUESTION_LINES``), answer with its confidence and the top option probabilities,
    the status (how the question was answered; per target its state and P(Yes)), the warnings' codes, one line per
    drawn region (id, rank, target, P(Yes)), and with ``heat`` (the heat style) what the heat shows.
    """
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
    if heat and result.relevance_maps:
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


def picture_font(size: int) -> Font:
    """The pictures' font at ``size`` px (legend and box tags)."""
    return ImageFont.load_default(size=size)


def overlaps(a: Rect, b: Rect) -> bool:
    """Whether the picture rectangles ``a`` and ``b`` share a pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _area(a: Rect, b: Rect) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


class Layout(NamedTuple):
    """A legend panel's font, font size and padding (px), and its (width, height) in px."""

    font: Font
    size: int  # font size, px
    pad: int
    panel: tuple[int, int]  # width, height


def _layout(lines: Sequence[LegendLine], size: int) -> Layout:
    fnt = picture_font(size)
    pad, sw = max(3, size // 3), size
    widths = [fnt.getlength(t) + (sw + pad if rank is not None else 0) for t, rank in lines]
    return Layout(fnt, size, pad, (2 * pad + math.ceil(max(widths)), pad + len(lines) * (size + pad)))


def place_legend(
    grey: np.ndarray, lines: Sequence[LegendLine], keep_out: Sequence[Rect], boxes: Sequence[Rect]
) -> tuple[Layout, tuple[int, int]] | None:
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
        free = [(x, y) for x, y in spots if not any(overlaps((x, y, x + pw + 1, y + ph + 1), k) for k in keep_out)]
        if free:

            def hidden(c: tuple[int, int], pw: int = pw, ph: int = ph) -> tuple[float, float]:
                rect = (c[0], c[1], c[0] + pw + 1, c[1] + ph + 1)
                detail = float(grey[rect[1] : rect[3], rect[0] : rect[2]].std())
                return sum(_area(rect, b) / (1 + i) for i, b in enumerate(boxes)), detail

            return lay, min(free, key=hidden)
    return None


def with_legend_margin(
    picture: Image.Image, lines: Sequence[LegendLine]
) -> tuple[Image.Image, tuple[Layout, tuple[int, int]]]:
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


def draw_legend(
    canvas: Image.Image,
    lay: Layout,
    at: tuple[int, int],
    lines: Sequence[LegendLine],
    swatch: Callable[[int], tuple[int, int, int]],
) -> None:
    """A white panel at ``at`` with the legend lines, region lines after a swatch of ``swatch(rank)``."""
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
            draw.rectangle([tx, ty, tx + size, ty + size], fill=swatch(rank), outline=HALO)
            tx += size + pad
        draw.text((tx, ty), text, fill=(0, 0, 0), font=lay.font)
