"""Stage IV: anchors, growing square boxes, NMS (docs/method.md, Stage IV).

Invariants: anchors at least s_dist apart; every box has an odd side in [s_min, s_max] and lies inside the grid; no
two kept boxes have IoU > nms_iou.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest

from focus_tool.config import ProposalConfig
from focus_tool.ops.boxes import box_iou
from focus_tool.steps.proposals import propose_regions, select_anchors


@pytest.mark.parametrize(
    ("a_bar", "k", "s_dist", "expected"),
    [
        ([[1, 9, 3], [7, 2, 8], [4, 6, 5]], 3, 0.0, [(0, 1), (1, 2), (1, 0)]),  # plain top-k, best first
        ([[1, 1], [1, 1]], 4, 0.0, [(0, 0), (0, 1), (1, 0), (1, 1)]),  # all tied: row-major order
        ([[2, 5], [5, 2]], 2, 0.0, [(0, 1), (1, 0)]),  # tie at the top: lower row-major index first
        ([[5, 4, 3, 2, 1]], 5, 2.0, [(0, 0), (0, 2), (0, 4)]),  # distance filter: neighbours 1 cell away dropped
        ([[5, 4, 3, 2, 1]], 2, 2.0, [(0, 0)]),  # k applies before the filter: (0, 2) is never considered
        ([[4, 1], [1, 3]], 4, 2.0, [(0, 0)]),  # diagonal sqrt(2) < 2: dropped
        ([[4, 1], [1, 3]], 4, 1.4, [(0, 0), (1, 1)]),  # sqrt(2) >= 1.4: kept; (0, 1) at 1 < 1.4: dropped
        ([[5, 4, 3]], 3, 1.0, [(0, 0), (0, 1), (0, 2)]),  # distance exactly s_dist: kept (>=)
        ([[3, 3, 3]], 3, 2.0, [(0, 0), (0, 2)]),  # tie + filter: (0, 0) wins the tie
    ],
)
def test_select_anchors(a_bar: list, k: int, s_dist: float, expected: list) -> None:
    out = select_anchors(np.array(a_bar, dtype=float), k, s_dist)
    assert out.shape == (len(expected), 2)
    assert [tuple(map(int, rc)) for rc in out] == expected


CFG = ProposalConfig(k=1, s_min=3, s_max=5, s_dist=2.0, expand_thr=0.5, nms_iou=0.3)


def _peak(rows: int, cols: int, r: int, c: int, floor: float = 1.0, peak: float = 100.0) -> np.ndarray:
    m = np.full((rows, cols), floor)
    m[r, c] = peak
    return m


@pytest.mark.parametrize(
    ("relevance", "cfg", "expected_boxes"),
    [
        # flat 1s with a 100 peak at (4, 4): mean 180/81, so flat cells are 0.45, the peak 45; the 3x3 mean is 5.4,
        # the 5x5 mean 2.2 >= 0.5: grows to s_max, centred on the peak
        (_peak(9, 9, 4, 4), CFG, [[2, 2, 7, 7]]),
        # the same with s_max 9: 7x7 mean 1.36, 9x9 mean 1.0, both >= 0.5 -> the whole map
        (_peak(9, 9, 4, 4), replace(CFG, s_max=9), [[0, 0, 9, 9]]),
        # s_max = s_min: no growth
        (_peak(9, 9, 4, 4), replace(CFG, s_max=3), [[3, 3, 6, 6]]),
        # peak at the top-left corner: boxes shifted inside, size kept
        (_peak(9, 9, 0, 0), CFG, [[0, 0, 5, 5]]),
        (_peak(9, 9, 0, 0), replace(CFG, s_max=3), [[0, 0, 3, 3]]),
        # peak at the bottom-right corner (8, 8)
        (_peak(9, 9, 8, 8), CFG, [[4, 4, 9, 9]]),
        # peak on the left edge, middle row: only x is shifted
        (_peak(9, 9, 4, 0), CFG, [[0, 2, 5, 7]]),
        # non-square map, peak at (1, 6) of 3 x 8: the 5x5 box cannot fit 3 rows -> clipped to the grid; 3x3 first
        (_peak(3, 8, 1, 6), replace(CFG, s_max=3), [[5, 0, 8, 3]]),
        # grid smaller than s_min: clipped to the grid
        (_peak(2, 2, 1, 1), CFG, [[0, 0, 2, 2]]),
    ],
)
def test_propose_regions_boxes(relevance: np.ndarray, cfg: ProposalConfig, expected_boxes: list) -> None:
    props = propose_regions(relevance, cfg)
    assert props.cells_xyxy.tolist() == expected_boxes


def _block_map() -> np.ndarray:
    """7x7: zeros, a 3x3 block of 9 around (3, 3), the centre 10. Sum 82, mean 82/49.

    In units of the map mean: block 5.378, centre 5.976. Box means: 3x3 = 49*81/(82*9)... = 5.44,
    5x5 = 49/25 = 1.96 (the whole mass is inside), 7x7 = 1.0.
    """
    m = np.zeros((7, 7))
    m[2:5, 2:5] = 9.0
    m[3, 3] = 10.0
    return m


@pytest.mark.parametrize(
    ("cfg", "expected_box"),
    [
        (replace(CFG, s_max=7, expand_thr=0.5), [0, 0, 7, 7]),  # 5x5 1.96, 7x7 1.0: both pass
        (replace(CFG, s_max=7, expand_thr=0.99), [0, 0, 7, 7]),  # 7x7 mean 1.0 still passes
        (replace(CFG, s_max=7, expand_thr=1.5), [1, 1, 6, 6]),  # 7x7 mean 1.0 < 1.5: stops at 5
        (replace(CFG, s_max=7, expand_thr=2.0), [2, 2, 5, 5]),  # 5x5 mean 1.96 < 2.0: stops at 3
        (replace(CFG, s_max=7, expand_thr=100.0), [2, 2, 5, 5]),  # the initial box is kept whatever its mean
        # anchor_ratio: 5x5 mean / anchor = 1.96 / 5.976 = 0.33 < 0.5 -> stops at 3
        (replace(CFG, s_max=7, expand_thr=0.5, expand_mode="anchor_ratio"), [2, 2, 5, 5]),
        # anchor_ratio with threshold 0.3: 5x5 ratio 0.33 passes, 7x7 ratio 1/5.976 = 0.167 fails
        (replace(CFG, s_max=7, expand_thr=0.3, expand_mode="anchor_ratio"), [1, 1, 6, 6]),
    ],
)
def test_growth_stops_when_mean_falls_below_threshold(cfg: ProposalConfig, expected_box: list) -> None:
    props = propose_regions(_block_map(), cfg)
    assert props.cells_xyxy.tolist() == [expected_box]
    assert props.anchors_rc.tolist() == [[3, 3]]
    assert props.anchor_scores == pytest.approx([10 * 49 / 82])


@pytest.mark.parametrize(
    "relevance",
    [
        np.zeros((6, 6)),  # all zero
        np.zeros((1, 1)),  # single zero cell
        np.full((4, 4), np.nan),  # not finite
    ],
)
def test_propose_regions_empty(relevance: np.ndarray) -> None:
    props = propose_regions(relevance, ProposalConfig())
    assert len(props) == 0
    assert props.cells_xyxy.shape == (0, 4)
    assert props.anchors_rc.shape == (0, 2)
    assert props.anchor_scores.shape == (0,)


def test_two_peaks_ordered_by_anchor_score() -> None:
    m = np.ones((12, 12))
    m[2, 2] = 50.0
    m[9, 9] = 80.0
    props = propose_regions(m, replace(CFG, k=2, s_max=3))
    assert props.anchors_rc.tolist() == [[9, 9], [2, 2]]
    assert props.cells_xyxy.tolist() == [[8, 8, 11, 11], [1, 1, 4, 4]]
    mean = (142 + 50 + 80) / 144
    assert props.anchor_scores == pytest.approx([80 / mean, 50 / mean])


def test_nms_drops_overlapping_box() -> None:
    # anchors (4, 4) and (4, 6) are 2 cells apart (pass s_dist 2); their 3x3 boxes share 3 of 9 cells: IoU 3/15 = 0.2
    m = np.ones((9, 9))
    m[4, 4] = 100.0
    m[4, 6] = 90.0
    base = replace(CFG, k=2, s_max=3)
    assert propose_regions(m, replace(base, nms_iou=0.3)).cells_xyxy.tolist() == [[3, 3, 6, 6], [5, 3, 8, 6]]
    assert propose_regions(m, replace(base, nms_iou=0.1)).cells_xyxy.tolist() == [[3, 3, 6, 6]]


def _random_maps() -> list[np.ndarray]:
    rng = np.random.default_rng(42)
    maps = [rng.gamma(0.5, size=(24, 24)) for _ in range(4)]
    padded = rng.gamma(0.5, size=(24, 24))
    padded[:6] = 0
    padded[18:] = 0  # pad band zeroed, as the pipeline does
    sparse = np.zeros((12, 12))
    sparse[rng.integers(0, 12, 5), rng.integers(0, 12, 5)] = rng.uniform(1, 5, 5)
    return [*maps, padded, sparse, rng.gamma(0.5, size=(7, 13))]


@pytest.mark.parametrize("relevance", _random_maps())
@pytest.mark.parametrize(
    "cfg",
    [
        ProposalConfig(),  # tool defaults: k 30, s 3..5, s_dist 2, nms 0.3
        ProposalConfig(k=50, s_min=1, s_max=7, s_dist=3.0, nms_iou=0.5),
        ProposalConfig(k=10, s_min=3, s_max=9, s_dist=1.0, expand_thr=0.2, nms_iou=0.1),
    ],
)
def test_proposal_invariants(relevance: np.ndarray, cfg: ProposalConfig) -> None:
    rows, cols = relevance.shape
    props = propose_regions(relevance, cfg)
    assert len(props) >= 1
    b = props.cells_xyxy
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    # the box is square with an odd side in [s_min, s_max]; a side longer than the grid is clipped to the grid
    side = np.maximum(w, h)
    assert (side % 2 == 1).all()
    assert ((side >= cfg.s_min) & (side <= cfg.s_max)).all()
    assert (w == np.minimum(side, cols)).all() and (h == np.minimum(side, rows)).all()
    assert ((b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= cols) & (b[:, 3] <= rows)).all()  # inside the grid
    assert (b == np.round(b)).all()  # whole cells
    if len(b) > 1:
        iou = box_iou(b, b)
        assert iou[~np.eye(len(b), dtype=bool)].max() <= cfg.nms_iou  # no kept pair above the NMS threshold
    for (r1, c1), (r2, c2) in combinations(props.anchors_rc.tolist(), 2):
        assert (r1 - r2) ** 2 + (c1 - c2) ** 2 >= cfg.s_dist**2  # anchors respect s_dist
    assert len(props) <= cfg.k
    assert (np.diff(props.anchor_scores) <= 0).all()  # best anchor first
    a_bar = relevance / relevance.mean()
    assert np.allclose(props.anchor_scores, a_bar[props.anchors_rc[:, 0], props.anchors_rc[:, 1]])
    for (r, c), box in zip(props.anchors_rc, b, strict=True):
        assert box[0] <= c < box[2] and box[1] <= r < box[3]  # the anchor is inside its box
    assert props.anchors_rc[0].tolist() == list(np.unravel_index(np.argmax(relevance), relevance.shape))
