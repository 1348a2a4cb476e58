"""Stage IV: region proposal on the relevance map (paper §3.3, App. A.5; docs/method.md, Stage IV).

1. normalise:  A_bar = A / mean(A)                      (scale-free)
2. anchors:    top-k cells by A_bar (ties: row-major), kept if >= s_dist cells from every kept anchor
3. boxes:      s_min x s_min square centred on each anchor, shifted inside the grid
4. growth:     +1 cell per side while the grown box's mean A_bar >= expand_thr and side <= s_max
5. order:      by A_bar at the anchor, descending
6. NMS:        greedy, IoU on cell boxes > nms_iou drops a box
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from focus_tool.config import ProposalConfig
from focus_tool.ops.boxes import nms


@dataclass(frozen=True)
class Proposals:
    """Cell boxes ``[c0, r0, c1, r1)`` ordered by anchor score, with their anchors (row, col) and scores."""

    cells_xyxy: npt.NDArray[np.float64]  # (N, 4)
    anchors_rc: npt.NDArray[np.int64]  # (N, 2)
    anchor_scores: npt.NDArray[np.float64]  # (N,) A_bar at the anchor

    def __len__(self) -> int:
        return len(self.cells_xyxy)


def _square(r: int, c: int, side: int, rows: int, cols: int) -> tuple[int, int, int, int]:
    """Square of ``side`` cells centred on (r, c), shifted inside the grid; clipped if the grid is smaller."""
    half = side // 2
    r0, c0 = r - half, c - half
    r0 = min(max(r0, 0), max(rows - side, 0))
    c0 = min(max(c0, 0), max(cols - side, 0))
    return c0, r0, min(c0 + side, cols), min(r0 + side, rows)


def select_anchors(a_bar: npt.NDArray[np.float64], k: int, s_dist: float) -> npt.NDArray[np.int64]:
    """Top-``k`` cells (row-major tie break), then the greedy distance filter; returns (M, 2) (row, col)."""
    flat = a_bar.reshape(-1)
    order = np.lexsort((np.arange(flat.size), -flat))[:k]
    cols = a_bar.shape[1]
    kept: list[tuple[int, int]] = []
    for idx in order:
        r, c = divmod(int(idx), cols)
        if all((r - kr) ** 2 + (c - kc) ** 2 >= s_dist**2 for kr, kc in kept):
            kept.append((r, c))
    return np.asarray(kept, dtype=np.int64).reshape(-1, 2)


def propose_regions(relevance: npt.NDArray[np.float64], cfg: ProposalConfig) -> Proposals:
    """Candidate ROIs on a (rows, cols) relevance map.

    Args:
        relevance: (rows, cols) non-negative map (pad cells already zeroed).
        cfg: anchors, box sizes, growth and NMS settings.

    Returns:
        Proposals after NMS, best anchor first. Empty when the map is all zeros.
    """
    rows, cols = relevance.shape
    mean = float(relevance.mean())
    if mean <= 0 or not np.isfinite(mean):
        return Proposals(np.zeros((0, 4)), np.zeros((0, 2), dtype=np.int64), np.zeros(0))
    a_bar = relevance / mean  # (rows, cols), mean 1
    anchors = select_anchors(a_bar, cfg.k, cfg.s_dist)
    boxes, scores = [], []
    for r, c in anchors:
        box = _square(int(r), int(c), cfg.s_min, rows, cols)
        side = cfg.s_min
        while side + 2 <= cfg.s_max:
            grown = _square(int(r), int(c), side + 2, rows, cols)
            region = a_bar[grown[1] : grown[3], grown[0] : grown[2]]
            crit = region.mean() if cfg.expand_mode == "map_mean" else region.mean() / max(a_bar[r, c], 1e-12)
            if crit < cfg.expand_thr or grown == box:
                break
            box, side = grown, side + 2
        boxes.append(box)
        scores.append(float(a_bar[r, c]))
    cells = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    score_arr = np.asarray(scores, dtype=np.float64)
    keep = nms(cells, score_arr, cfg.nms_iou)
    return Proposals(cells[keep], anchors[keep], score_arr[keep])
