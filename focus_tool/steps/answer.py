"""Stage VI: what the final answer is given (paper §3.3, App. A.5; docs/method.md, Stage VI).

Global-view models (one image per prompt, :func:`answer_view`):

- type-1, one target: the crop of its best ROI;
- type-1, several targets: the crop of the union of their best ROIs, unless two ROI centres are farther apart
  than ``t_obj_dist`` px: then each ROI is pasted on a canvas in an ordinal grid (keeps left/right, above/below);
- type-2: all kept ROIs, overlapping ones merged, pasted on a canvas in reading order.

Global-local and native models (several images per prompt, :func:`focus_views`): no union or canvas. A context image
(the full image, or the ROIs' union region) with every selected ROI outlined, then one crop per ROI, highest c_Yes
first, each after a caption line (a ZoomEye-style prompt; docs/method.md, Stage VI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from focus_tool.config import AnswerConfig
from focus_tool.ops.boxes import merge_overlapping, union_box
from focus_tool.ops.images import CLIP_MEAN_RGB

CONTEXT_CAPTION = {
    "full": "This is the full image; the outlined regions are the focus regions.",
    "union": "This is the part of the image that holds the focus regions; the outlined regions are the focus regions.",
}
CROP_CAPTION = "This is a zoomed-in view of focus region {k}."
OUTLINE_RED = (255, 0, 0)


@dataclass(frozen=True)
class AnswerView:
    """What the answer pass sees: one image and the image boxes it was made from."""

    image: Image.Image
    mode: Literal["full", "crop", "union", "canvas"]
    boxes_xyxy: npt.NDArray[np.float64]  # (M, 4) image pixels


def crop(image: Image.Image, xyxy: npt.NDArray[np.float64]) -> Image.Image:
    """Crop an image-pixel box (integer-rounded outward, clipped to the image)."""
    w, h = image.size
    x0, y0 = max(0, math.floor(xyxy[0])), max(0, math.floor(xyxy[1]))
    x1, y1 = min(w, math.ceil(xyxy[2])), min(h, math.ceil(xyxy[3]))
    return image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))


def canvas(
    image: Image.Image, boxes: npt.NDArray[np.float64], layout: Literal["ordinal", "reading"], cell: int
) -> Image.Image:
    """Paste each box's crop, resized to fit a ``cell`` px square (aspect kept), on a pad-coloured grid."""
    n = len(boxes)
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    if layout == "ordinal":  # column = rank of centre x, row = rank of centre y
        col = np.argsort(np.argsort(centers[:, 0], kind="stable"), kind="stable")
        row = np.argsort(np.argsort(centers[:, 1], kind="stable"), kind="stable")
        n_cols, n_rows = n, n
    else:
        n_cols = math.ceil(math.sqrt(n))
        order = np.lexsort((centers[:, 0], centers[:, 1]))
        pos = np.empty(n, dtype=int)
        pos[order] = np.arange(n)
        col, row = pos % n_cols, pos // n_cols
        n_rows = math.ceil(n / n_cols)
    gap = cell // 16
    out = Image.new("RGB", (n_cols * (cell + gap) + gap, n_rows * (cell + gap) + gap), CLIP_MEAN_RGB)
    for i, b in enumerate(boxes):
        piece = crop(image, b)
        scale = cell / max(piece.size)
        piece = piece.resize(
            (max(1, round(piece.width * scale)), max(1, round(piece.height * scale))), Image.Resampling.BICUBIC
        )
        x = gap + int(col[i]) * (cell + gap) + (cell - piece.width) // 2
        y = gap + int(row[i]) * (cell + gap) + (cell - piece.height) // 2
        out.paste(piece, (x, y))
    return out


def answer_view(
    image: Image.Image, best_per_target: list[npt.NDArray[np.float64]], *, type2: bool, cfg: AnswerConfig
) -> AnswerView:
    """Choose the answer input from the selected ROIs (image pixels).

    Args:
        image: the original image.
        best_per_target: for type-1, one (4,) box per target; for type-2, the (M, 4) kept boxes of the target.
        type2: whether the question asks about all instances.
        cfg: union/canvas settings.
    """
    if not best_per_target or all(len(np.atleast_2d(b)) == 0 for b in best_per_target):
        return AnswerView(image, "full", np.zeros((0, 4)))
    boxes = np.concatenate([np.atleast_2d(b) for b in best_per_target])[: cfg.max_crops if type2 else None]
    if type2:
        merged = merge_overlapping(boxes)
        if len(merged) == 1:
            return AnswerView(crop(image, merged[0]), "crop", merged)
        return AnswerView(canvas(image, merged, "reading", cfg.canvas_cell), "canvas", merged)
    if len(boxes) == 1:
        return AnswerView(crop(image, boxes[0]), "crop", boxes)
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    dist = np.sqrt(((centers[:, None] - centers[None]) ** 2).sum(-1)).max()
    if dist > cfg.t_obj_dist:
        return AnswerView(canvas(image, boxes, "ordinal", cfg.canvas_cell), "canvas", boxes)
    u = union_box(boxes)
    return AnswerView(crop(image, u), "union", u[None])


@dataclass(frozen=True)
class FocusViews:
    """What a multi-image answer pass sees: images and caption lines in prompt order, and the crops' boxes."""

    parts: list[Image.Image | str]  # context image, its caption, then a crop and its caption per region
    boxes_xyxy: npt.NDArray[np.float64]  # (M, 4) image pixels of the crops, in prompt order
    context_xyxy: tuple[int, int, int, int]  # image-pixel rectangle the context image shows


def outline_width(long_side: int) -> int:
    """Rectangle line width: 3 px per 1000 px of the long side, at least 1 px (our choice)."""
    return max(1, round(3 * long_side / 1000))


def _int_box(xyxy: npt.NDArray[np.float64], wh: tuple[int, int]) -> tuple[int, int, int, int]:
    """The integer box :func:`crop` cuts for ``xyxy`` (outward rounding, clipped, at least 1 px)."""
    x0, y0 = max(0, math.floor(xyxy[0])), max(0, math.floor(xyxy[1]))
    x1, y1 = min(wh[0], math.ceil(xyxy[2])), min(wh[1], math.ceil(xyxy[3]))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def focus_views(
    image: Image.Image,
    boxes: npt.NDArray[np.float64],
    confidences: npt.NDArray[np.float64],
    cfg: AnswerConfig,
) -> FocusViews:
    """The multi-image answer input: the outlined context image, then one crop per ROI (docs/method.md, Stage VI).

    Args:
        image: the original image.
        boxes: (M, 4) selected ROIs in image pixels: one per target (type-1) or every kept ROI (type-2).
        confidences: (M,) their c_Yes; NaN for an unscored ROI (ranked after the scored ones).
        cfg: ``max_crops`` (crops passed, highest c_Yes first; ties keep the input order) and ``context_image``.

    Returns:
        ``parts`` = [context, context caption, crop 1, "... focus region 1.", ..., crop k, "... focus region k."];
        the question line is the caller's. Every ROI is outlined (and, for "union", inside the context image);
        only the ``max_crops`` best are passed as crops, and ``boxes_xyxy`` holds those.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    if len(boxes) != len(conf):
        raise ValueError(f"{len(boxes)} boxes but {len(conf)} confidences")
    if len(boxes) == 0:
        raise ValueError("focus_views needs at least one box")
    order = sorted(range(len(boxes)), key=lambda i: (math.isnan(conf[i]), -np.nan_to_num(conf[i]), i))
    rgb = image.convert("RGB")
    int_boxes = [_int_box(b, rgb.size) for b in boxes]  # every selected ROI is outlined
    boxes = boxes[order[: cfg.max_crops]]  # the crops
    if cfg.context_image == "union":
        u = union_box(np.asarray(int_boxes, dtype=np.float64))
        ctx_box = (int(u[0]), int(u[1]), int(u[2]), int(u[3]))
    else:
        ctx_box = (0, 0, rgb.width, rgb.height)
    context = rgb.crop(ctx_box)
    draw = ImageDraw.Draw(context)
    width = outline_width(max(context.size))
    for x0, y0, x1, y1 in int_boxes:  # inside the box: the outline covers the crop's border pixels
        draw.rectangle(
            (x0 - ctx_box[0], y0 - ctx_box[1], x1 - 1 - ctx_box[0], y1 - 1 - ctx_box[1]),
            outline=OUTLINE_RED,
            width=width,
        )
    parts: list[Image.Image | str] = [context, CONTEXT_CAPTION[cfg.context_image]]
    for k, b in enumerate(boxes, start=1):
        parts += [crop(rgb, b), CROP_CAPTION.format(k=k)]
    return FocusViews(parts, boxes, ctx_box)
