"""Stage V: rank ROIs by existence confidence c_Yes (paper §3.3, App. A.5, App. C.1; docs/method.md, Stage V).

c_Yes = softmax over the (Yes, No) next-token logits = sigmoid(l_Yes - l_No) on the crop of each ROI with the
prompt "Is there a {target} in the image?".
- type-1: score the first ``n_steps`` ROIs (in anchor order, batched); with ``overrun``, while every score is a No
  (l_Yes < l_No) keep scoring the next ROIs one at a time and stop at the first Yes. Winner = argmax c_Yes.
  ``n_steps = 1`` without overrun = "no ranking": the top-anchor ROI, no existence pass at all.
- type-2: score every ROI and keep those with c_Yes > t_type2.
- adaptive (``mode="adaptive"``, ours): score the first ROI alone; accept it when its c_Yes >= ``accept_conf`` and
  the map is clear (the second anchor below ``ambiguity_ratio`` x the first, the first at least ``flat_peak`` x the
  map mean); otherwise continue exactly as type-1 (the first score is reused). Type-2 targets are ranked as the
  paper does in every mode.
The scorer is a callback, so this step is pure and testable without a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from focus_tool.config import RankConfig

Scorer = Callable[[Sequence[int]], npt.NDArray[np.float64]]
"""Maps ROI indices to their (l_Yes - l_No) logit margins; one model sequence per index."""


@dataclass(frozen=True)
class Ranking:
    """Outcome of ranking one target's ROIs."""

    scored: tuple[int, ...]  # ROI indices scored, in scoring order
    confidence: dict[int, float]  # ROI index -> c_Yes in [0, 1]
    selected: tuple[int, ...]  # winner (type-1) or every ROI kept (type-2), best first
    passes: int  # sequences scored (= search forward passes spent here)
    doubt: tuple[str, ...] = ()  # adaptive mode: why more than the first ROI was scored (empty: accepted alone)


def confidence_from_margin(margin: npt.NDArray[np.float64], scale: str = "softmax") -> npt.NDArray[np.float64]:
    """Yes/No logit margin -> confidence. ``softmax``: sigmoid in [0, 1]; ``zoomeye``: 2 * sigmoid - 1."""
    p = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(margin, dtype=np.float64), -500, 500)))
    return p if scale == "softmax" else 2 * p - 1


def map_doubts(anchor_scores: Sequence[float], cfg: RankConfig) -> tuple[str, ...]:
    """Why the map alone does not settle a target: ``"ambiguous_map"`` (a second anchor within ``ambiguity_ratio``
    of the first) and / or ``"flat_map"`` (the first anchor under ``flat_peak`` x the map mean). Anchor scores are
    relevance at each ROI's anchor relative to the map mean, in ROI order.
    """
    doubts = []
    if len(anchor_scores) > 1 and anchor_scores[1] >= cfg.ambiguity_ratio * anchor_scores[0]:
        doubts.append("ambiguous_map")
    if len(anchor_scores) and anchor_scores[0] < cfg.flat_peak:
        doubts.append("flat_map")
    return tuple(doubts)


def rank_adaptive(n_rois: int, score: Scorer, anchor_scores: Sequence[float], cfg: RankConfig) -> Ranking:
    """Adaptive type-1 ranking: the first ROI alone when it is a confident Yes on a clear map, else :func:`rank_type1`
    with the first score reused (see the module docstring).
    """
    if n_rois == 0:
        return Ranking((), {}, (), 0)
    m0 = float(score([0])[0])
    c0 = float(confidence_from_margin(np.array([m0]), "softmax")[0])
    doubts = (("low_confidence",) if c0 < cfg.accept_conf else ()) + map_doubts(anchor_scores, cfg)
    if not doubts or n_rois == 1:
        return Ranking((0,), {0: c0}, (0,), 1, doubts)
    ranked = rank_type1(n_rois, score, cfg, known={0: m0})
    return Ranking(ranked.scored, ranked.confidence, ranked.selected, ranked.passes, doubts)


def rank_type1(n_rois: int, score: Scorer, cfg: RankConfig, *, known: dict[int, float] | None = None) -> Ranking:
    """Rank ROIs ``0..n_rois-1`` (anchor order) for a single-instance target.

    ``known``: margins already scored (not scored again, counted in ``passes``).
    """
    if n_rois == 0:
        return Ranking((), {}, (), 0)
    if cfg.n_steps == 1 and not cfg.overrun:
        return Ranking((), {}, (0,), 0)
    first = [i for i in range(min(cfg.n_steps, n_rois)) if i not in (known or {})]
    margins: dict[int, float] = dict(known or {})
    for start in range(0, len(first), cfg.rank_batch_size):
        chunk = first[start : start + cfg.rank_batch_size]
        margins.update(zip(chunk, map(float, score(chunk)), strict=True))
    extra = 0
    nxt = min(cfg.n_steps, n_rois)
    while cfg.overrun and all(m < 0 for m in margins.values()) and nxt < n_rois:
        if cfg.max_overrun is not None and extra >= cfg.max_overrun:
            break
        margins[nxt] = float(score([nxt])[0])
        nxt += 1
        extra += 1
    conf = {i: float(confidence_from_margin(np.array([m]), "softmax")[0]) for i, m in margins.items()}
    best = max(conf, key=lambda i: (conf[i], -i))
    return Ranking(tuple(margins), conf, (best,), len(margins))


def rank_type2(n_rois: int, score: Scorer, cfg: RankConfig) -> Ranking:
    """Score every ROI and keep those whose confidence exceeds ``t_type2`` (best first)."""
    idx = list(range(n_rois))
    margins: dict[int, float] = {}
    for start in range(0, n_rois, cfg.rank_batch_size):
        chunk = idx[start : start + cfg.rank_batch_size]
        margins.update(zip(chunk, map(float, score(chunk)), strict=True))
    conf = {i: float(confidence_from_margin(np.array([m]), cfg.conf_scale)[0]) for i, m in margins.items()}
    kept = sorted((i for i in conf if conf[i] > cfg.t_type2), key=lambda i: (-conf[i], i))
    prob = {i: float(confidence_from_margin(np.array([m]), "softmax")[0]) for i, m in margins.items()}
    return Ranking(tuple(idx), prob, tuple(kept), len(idx))
