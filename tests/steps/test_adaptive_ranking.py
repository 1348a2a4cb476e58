"""Adaptive (lean) ranking on a scripted scorer: decisions match hand-worked traces (issue 15, check 7)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from focus_tool.config import RankConfig
from focus_tool.steps.ranking import map_doubts, rank_adaptive


class Scripted:
    """Fixed l_Yes - l_No per ROI; remembers every call (one model batch each)."""

    def __init__(self, margins: Sequence[float]) -> None:
        self.margins = list(margins)
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, indices: Sequence[int]) -> np.ndarray:
        self.calls.append(tuple(indices))
        return np.array([self.margins[i] for i in indices], dtype=np.float64)


CFG = RankConfig(mode="adaptive", n_steps=4, overrun=True, accept_conf=0.9, ambiguity_ratio=0.8, flat_peak=2.0)
SIG = 1 / (1 + np.exp(-np.array([3.0, 1.0, 2.0])))  # 0.9526, 0.7311, 0.8808

# (margins per ROI, anchor scores per ROI, expected calls, selected, doubts)
TRACES = [
    # confident Yes (0.953 >= 0.9) on a clear map (5 < 0.8 * 10, 10 >= 2): the first ROI alone, one pass
    ([3.0, 5.0, 5.0, 5.0], [10.0, 5.0, 4.0, 3.0], [(0,)], (0,), ()),
    # 0.731 < 0.9: the rest of the paper's first n_steps in one batch, the first score reused; argmax = ROI 1
    ([1.0, 2.0, -1.0, 0.5], [10.0, 5.0, 4.0, 3.0], [(0,), (1, 2, 3)], (1,), ("low_confidence",)),
    # confident but a second peak at 9 >= 0.8 * 10: ambiguous map, keep scoring; ROI 0 still wins
    ([3.0, 2.0, -1.0, 0.5], [10.0, 9.0, 4.0, 3.0], [(0,), (1, 2, 3)], (0,), ("ambiguous_map",)),
    # confident on a flat map (peak 1.5 < 2): keep scoring; ROI 2 wins
    ([3.0, 2.0, 4.0, 0.5], [1.5, 0.5, 0.4, 0.3], [(0,), (1, 2, 3)], (2,), ("flat_map",)),
    # every answer No: overrun one ROI at a time until the first Yes (ROI 4), as in the paper
    (
        [-2.0, -1.0, -3.0, -4.0, 0.5, 9.0],
        [10.0, 5.0, 4.0, 3.0, 2.5, 2.4],
        [(0,), (1, 2, 3), (4,)],
        (4,),
        ("low_confidence",),
    ),
]


@pytest.mark.parametrize(("margins", "anchors", "calls", "selected", "doubts"), TRACES)
def test_adaptive_trace(
    margins: list[float],
    anchors: list[float],
    calls: list[tuple[int, ...]],
    selected: tuple[int, ...],
    doubts: tuple[str, ...],
) -> None:
    scorer = Scripted(margins)
    r = rank_adaptive(len(margins), scorer, anchors, CFG)
    assert scorer.calls == calls
    assert r.selected == selected and r.doubt == doubts
    assert r.passes == sum(len(c) for c in calls)
    assert r.confidence[0] == pytest.approx(1 / (1 + np.exp(-margins[0])))


def test_single_roi_is_kept_whatever_the_doubt() -> None:
    scorer = Scripted([-5.0])
    r = rank_adaptive(1, scorer, [1.0], CFG)
    assert r.selected == (0,) and r.passes == 1 and r.doubt == ("low_confidence", "flat_map")


def test_no_roi() -> None:
    r = rank_adaptive(0, Scripted([]), [], CFG)
    assert r.selected == () and r.passes == 0


@pytest.mark.parametrize(
    ("anchors", "doubts"),
    [
        ([10.0, 7.9], ()),
        ([10.0, 8.0], ("ambiguous_map",)),
        ([1.9], ("flat_map",)),
        ([1.0, 0.9], ("ambiguous_map", "flat_map")),
    ],
)
def test_map_doubts(anchors: list[float], doubts: tuple[str, ...]) -> None:
    assert map_doubts(anchors, CFG) == doubts


def test_sigmoids_used_in_the_traces() -> None:  # the hand-worked numbers above
    assert SIG[0] > 0.9 > SIG[2] > SIG[1]
