"""Pure box operations on ``(N, 4)`` xyxy arrays (any frame: cells or pixels). numpy in, numpy out."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


def box_area(xyxy: FloatArray) -> FloatArray:
    """(N, 4) -> (N,) areas (0 for degenerate boxes)."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_intersection(a: FloatArray, b: FloatArray) -> FloatArray:
    """(N, 4), (M, 4) -> (N, M) intersection areas."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: FloatArray, b: FloatArray) -> FloatArray:
    """(N, 4), (M, 4) -> (N, M) intersection over union (0 where both areas are 0)."""
    inter = box_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_coverage(boxes: FloatArray, target: FloatArray) -> FloatArray:
    """(N, 4), (M, 4) -> (N, M) fraction of each target box's area inside each box (recall criterion)."""
    inter = box_intersection(boxes, target)
    area = box_area(target)[None, :]
    return np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)


def nms(xyxy: FloatArray, scores: FloatArray, iou_threshold: float) -> IntArray:
    """Greedy non-maximum suppression; returns kept indices, best score first (ties: lower index first).

    A box is dropped when its IoU with an already kept box is strictly greater than ``iou_threshold``.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(xyxy) != len(scores):
        raise ValueError(f"got {len(xyxy)} boxes but {len(scores)} scores")
    order = np.lexsort((np.arange(len(scores)), -scores))  # score desc, index asc
    iou = box_iou(xyxy, xyxy)
    keep: list[int] = []
    for i in order:
        if all(iou[i, j] <= iou_threshold for j in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.intp)


def union_box(xyxy: FloatArray) -> FloatArray:
    """(N, 4) -> (4,) smallest box containing all boxes."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        raise ValueError("union_box needs at least one box")
    return np.array([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])


def merge_overlapping(xyxy: FloatArray) -> FloatArray:
    """Repeatedly replace any two overlapping boxes (IoU > 0) by their union until none overlap."""
    boxes = [np.asarray(b, dtype=np.float64) for b in np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)]
    changed = True
    while changed:
        changed = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if box_iou(boxes[i], boxes[j])[0, 0] > 0:
                    boxes[i] = union_box(np.stack([boxes[i], boxes[j]]))
                    del boxes[j]
                    changed = True
                    break
            if changed:
                break
    return np.stack(boxes) if boxes else np.zeros((0, 4))


def expand_to_min_size(xyxy: FloatArray, min_side: float, bounds_wh: tuple[float, float]) -> FloatArray:
    """(N, 4) boxes grown about their centres to at least ``min_side`` per side, shifted inside ``bounds_wh``."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4).copy()
    w, h = bounds_wh
    for axis, limit in ((0, w), (1, h)):
        lo, hi = b[:, axis], b[:, axis + 2]
        side = np.minimum(np.maximum(hi - lo, min_side), limit)
        c = (lo + hi) / 2
        lo_new = np.clip(c - side / 2, 0, limit - side)
        b[:, axis], b[:, axis + 2] = lo_new, lo_new + side
    return b
