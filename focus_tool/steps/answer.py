"""Stage VI: the image the final answer is given (paper §3.3, App. A.5; spec Sec. 7, global-view models).

- type-1, one target: the crop of its best ROI;
- type-1, several targets: the crop of the union of their best ROIs, unless two ROI centres are farther apart
  than ``t_obj_dist`` px: then each ROI is pasted on a canvas in an ordinal grid (keeps left/right, above/below);
- type-2: all kept ROIs, overlapping ones merged, pasted on a canvas in reading order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from focus_tool.config import AnswerConfig
from focus_tool.ops.boxes import merge_overlapping, union_box
from focus_tool.ops.images import CLIP_MEAN_RGB


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
