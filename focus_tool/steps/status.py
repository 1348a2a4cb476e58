"""After Stage V: whether a target was found, the warnings a caller must see, and the regions the answer uses.

found (best c_Yes >= ``rank.found_conf``), ambiguous (more than one distinct object above it for a single-instance
target), not found (none above it, or nothing proposed) and unverified (ranking off).

Distinct objects [ours; the paper reports no status]: the ROIs above ``found_conf`` are grouped greedily in
descending c_Yes, and an ROI joins an already kept one when it shows the same object: their boxes overlap or touch
and the relevance map along the line between the two box centres never drops below ``rank.object_dip`` x the lower
of its two end values. Overlapping crops of one card (a zoom into a found card gives several) are one object; two
cards are two objects when their boxes are apart or the map falls to the background between them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from focus_tool.config import FocusConfig
from focus_tool.ops.boxes import FloatArray
from focus_tool.result import ResultWarning, TargetStatus
from focus_tool.steps.ranking import Ranking, map_doubts
from focus_tool.steps.targets import Target

_TOUCH_CELLS = 1e-6  # boxes this close (cells) touch: float error of the px <-> cell round trip


def same_object(a_cells: FloatArray, b_cells: FloatArray, relevance: FloatArray, object_dip: float) -> bool:
    """Whether two ROIs show one object: their boxes overlap or touch, and the map has no dip between them.

    Args:
        a_cells: (4,) the first box, [c0, r0, c1, r1] in fractional grid cells.
        b_cells: (4,) the second box, same frame.
        relevance: (rows, cols) the relevance map the boxes were proposed on.
        object_dip: the map along the segment between the box centres must stay >= this x the lower end value.

    Returns:
        True when both hold.
    """
    gap_x = max(a_cells[0], b_cells[0]) - min(a_cells[2], b_cells[2])  # < 0: the boxes overlap in x
    gap_y = max(a_cells[1], b_cells[1]) - min(a_cells[3], b_cells[3])
    if max(gap_x, gap_y) > _TOUCH_CELLS:
        return False
    rows, cols = relevance.shape
    ca = np.array([(a_cells[0] + a_cells[2]) / 2, (a_cells[1] + a_cells[3]) / 2])  # (2,) x, y in cells
    cb = np.array([(b_cells[0] + b_cells[2]) / 2, (b_cells[1] + b_cells[3]) / 2])
    n = int(np.ceil(2 * np.abs(cb - ca).max())) + 2  # samples at most half a cell apart
    xy = ca + np.linspace(0.0, 1.0, n)[:, None] * (cb - ca)  # (n, 2)
    c = np.clip(np.floor(xy[:, 0]).astype(np.intp), 0, cols - 1)
    r = np.clip(np.floor(xy[:, 1]).astype(np.intp), 0, rows - 1)
    path = relevance[r, c]  # (n,) map values along the segment, ends included
    return bool(path.min() >= object_dip * min(path[0], path[-1]))


def distinct_objects(
    order: Sequence[int], boxes_cells: FloatArray, relevance: FloatArray, object_dip: float
) -> tuple[int, ...]:
    """One ROI per distinct object: greedy over ``order``, an ROI showing the same object as a kept one is skipped.

    Args:
        order: ROI indices, most confident first.
        boxes_cells: (N, 4) every ROI's box in fractional grid cells.
        relevance: (rows, cols) the relevance map.
        object_dip: see :func:`same_object`.

    Returns:
        The kept ROI indices (the most confident ROI of each object), in ``order``.
    """
    kept: list[int] = []
    for i in order:
        if not any(same_object(boxes_cells[i], boxes_cells[k], relevance, object_dip) for k in kept):
            kept.append(i)
    return tuple(kept)


def target_status(
    target: Target,
    ranking: Ranking,
    anchor_scores: Sequence[float],
    cfg: FocusConfig,
    *,
    boxes_cells: FloatArray,
    relevance: FloatArray,
) -> tuple[TargetStatus, list[ResultWarning], tuple[int, ...]]:
    """Found / not found / ambiguous from the scored P(Yes), the warnings, and the ROIs to select.

    Args:
        target: the target searched.
        ranking: Stage V's outcome for its regions.
        anchor_scores: the regions' anchor scores (the map's peaks: a flat map is a warning).
        cfg: ``rank`` (thresholds) and ``answer.on_not_found`` (what a not-found target selects).
        boxes_cells: (N, 4) the regions' boxes in fractional grid cells of ``relevance`` (N = all ROIs).
        relevance: (rows, cols) the map the regions were proposed on.

    Returns:
        The target's status, its warnings and the selected region indices (best first).
    """
    thr = cfg.rank.found_conf
    conf = ranking.confidence
    warnings: list[ResultWarning] = []
    name = target.phrase
    if "flat_map" in map_doubts(anchor_scores, cfg.rank):
        warnings.append(
            ResultWarning(
                code="flat_map",
                target=name,
                message=f"the relevance map of {name!r} has no clear peak; its regions are a guess",
            )
        )
    if not ranking.selected and not conf:  # no region proposed at all
        state = TargetStatus(target=name, state="not_found", confidence=None, threshold=thr, regions_above=0)
        return state, warnings, ()
    if not conf:  # ranking off (n_steps 1 without overrun)
        state = TargetStatus(target=name, state="unverified", confidence=None, threshold=thr, regions_above=0)
        return state, warnings, ranking.selected
    best = max(conf.values())
    if best < thr:
        warnings.append(
            ResultWarning(
                code="all_crops_no",
                target=name,
                message=f"every region checked for {name!r} was answered No (best P(Yes) {best:.3f} < {thr})",
            )
        )
        state = TargetStatus(target=name, state="not_found", confidence=best, threshold=thr, regions_above=0)
        if cfg.answer.on_not_found == "full_image":
            return state, warnings, ()
        warnings.append(
            ResultWarning(
                code="answered_below_threshold",
                target=name,
                message=f"answered on the best region of {name!r} although it is below the threshold "
                "(answer.on_not_found='best_region', the paper's rule)",
            )
        )
        return state, warnings, ranking.selected
    order = sorted((i for i, c in conf.items() if c >= thr), key=lambda i: (-conf[i], i))
    above = len(distinct_objects(order, boxes_cells, relevance, cfg.rank.object_dip))
    selected = tuple(i for i in ranking.selected if conf.get(i, 0.0) >= thr)
    if not target.all_instances and above > 1:
        warnings.append(
            ResultWarning(
                code="ambiguous",
                target=name,
                message=f"{above} distinct objects look like {name!r} (P(Yes) >= {thr}; overlapping regions of one "
                "object count once); the answer used the most confident one, check the others",
            )
        )
        state = TargetStatus(target=name, state="ambiguous", confidence=best, threshold=thr, regions_above=above)
        return state, warnings, selected
    state = TargetStatus(target=name, state="found", confidence=best, threshold=thr, regions_above=above)
    return state, warnings, selected
