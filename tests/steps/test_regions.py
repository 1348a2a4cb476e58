"""Regions: the validated container of one target's candidate boxes (image px) and anchor scores."""

from __future__ import annotations

import numpy as np
import pytest

from focus_tool.grid import PatchGrid
from focus_tool.steps.proposals import Proposals
from focus_tool.steps.regions import Regions


def _regions() -> Regions:
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]], dtype=np.float64)
    return Regions(boxes, np.array([3.0, 2.0, 1.0]))


@pytest.mark.parametrize(
    ("boxes", "scores"),
    [(np.zeros((2, 3)), np.zeros(2)), (np.zeros((2, 4)), np.zeros(3)), (np.zeros(4), np.zeros(1))],
)
def test_mismatched_arrays_are_rejected(boxes: np.ndarray, scores: np.ndarray) -> None:
    with pytest.raises(ValueError):
        Regions(boxes, scores)


def test_indexing_keeps_boxes_and_scores_together() -> None:
    r = _regions()
    masked = r[np.array([True, False, True])]
    assert masked.boxes.tolist() == [[0, 0, 10, 10], [1, 1, 2, 2]] and masked.anchor_scores.tolist() == [3.0, 1.0]
    picked = r[[2, 0]]
    assert picked.anchor_scores.tolist() == [1.0, 3.0] and len(r[[]]) == 0


def test_from_proposals_converts_clips_and_drops_empty_boxes() -> None:
    grid = PatchGrid.stretched((100, 50), 10, 10, (140, 140))  # a cell is 10 x 5 image px
    cells = np.array([[0, 0, 2, 2], [9, 9, 12, 12], [3, 3, 3, 4]], dtype=np.float64)
    props = Proposals(cells, np.zeros((3, 2), dtype=np.int64), np.array([2.0, 1.5, 1.0]))
    r = Regions.from_proposals(props, grid, (100, 50))
    assert r.boxes.tolist() == [[0, 0, 20, 10], [90, 45, 100, 50]]  # clipped; the zero-width box dropped
    assert r.anchor_scores.tolist() == [2.0, 1.5]
    grown = Regions.from_proposals(props, grid, (100, 50), min_crop_px=30)
    assert (grown.boxes[:, 2:] - grown.boxes[:, :2] >= 30).all()


def test_ranked_orders_by_confidence_then_proposal_order() -> None:
    grid = PatchGrid.stretched((100, 100), 10, 10, (140, 140))
    out = _regions().ranked(grid, {1: 0.9, 0: 0.4}, selected=(1,), target="cat")
    assert [reg.box for reg in out] == [(5, 5, 20, 20), (0, 0, 10, 10), (1, 1, 2, 2)]
    assert [reg.rank for reg in out] == [1, 2, 3] and [reg.selected for reg in out] == [True, False, False]
    assert out[2].confidence is None and out[0].anchor_score == 2.0
