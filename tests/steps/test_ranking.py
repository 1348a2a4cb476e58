"""Stage V: ranking ROIs by c_Yes with a scripted scorer (docs/method.md, Stage V and Forward passes).

Invariants: one pass per ROI scored; overrun stops at the first Yes and never before n_steps ROIs are scored;
n_steps = 1 without overrun runs no existence pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from focus_tool.config import RankConfig
from focus_tool.steps.ranking import confidence_from_margin, rank_type1, rank_type2


class Scripted:
    """A scorer returning fixed margins per ROI index and recording every call."""

    def __init__(self, margins: dict[int, float]) -> None:
        self.margins = margins
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, indices: Sequence[int]) -> np.ndarray:
        self.calls.append(tuple(indices))
        return np.array([self.margins[i] for i in indices], dtype=np.float64)


def sig(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def _m(*values: float) -> dict[int, float]:
    return dict(enumerate(values))


@pytest.mark.parametrize(
    ("margins", "cfg", "expected_calls", "expected_selected"),
    [
        # n_steps 1 without overrun: "no ranking", the top-anchor ROI, no existence pass
        (_m(-5, 9, 9), RankConfig(n_steps=1, overrun=False), [], (0,)),
        # n_steps 1 with overrun and a Yes: one pass
        (_m(2, 9), RankConfig(n_steps=1, overrun=True), [(0,)], (0,)),
        # n_steps 1 with overrun and a No: continue to the first Yes
        (_m(-2, -1, 3, 9), RankConfig(n_steps=1, overrun=True), [(0,), (1,), (2,)], (2,)),
        # n_steps 3, no overrun: exactly the first 3 scored in one batch, argmax wins; ROI 3 never scored
        (_m(-1, 2, 0.5, 10), RankConfig(n_steps=3, overrun=False), [(0, 1, 2)], (1,)),
        # n_steps 3, no overrun, all No: argmax of the three anyway
        (_m(-3, -1, -2, 10), RankConfig(n_steps=3, overrun=False), [(0, 1, 2)], (1,)),
        # overrun: all three No -> one at a time until the first Yes (4), stop there although 5 is higher
        (
            _m(-1, -2, -3, -0.5, 1, 5),
            RankConfig(n_steps=3, overrun=True),
            [(0, 1, 2), (3,), (4,)],
            (4,),
        ),
        # overrun not triggered when any of the first n_steps is a Yes
        (_m(-1, 0.1, -3, 9), RankConfig(n_steps=3, overrun=True), [(0, 1, 2)], (1,)),
        # margin exactly 0 is not a No (No <=> l_Yes < l_No): overrun stops on it
        (_m(-1, -1, 0, 7), RankConfig(n_steps=2, overrun=True), [(0, 1), (2,)], (2,)),
        # proposals exhausted while all No: argmax over everything scored
        (_m(-3, -1, -2, -4), RankConfig(n_steps=2, overrun=True), [(0, 1), (2,), (3,)], (1,)),
        # max_overrun caps the extra ROIs
        (_m(-3, -1, -2, -4, 5), RankConfig(n_steps=2, overrun=True, max_overrun=1), [(0, 1), (2,)], (1,)),
        (_m(-3, -1, -2, -4, 5), RankConfig(n_steps=2, overrun=True, max_overrun=0), [(0, 1)], (1,)),
        # fewer ROIs than n_steps: score what there is
        (_m(-1, 1), RankConfig(n_steps=4, overrun=True), [(0, 1)], (1,)),
        # batch size 2 splits the first n_steps in chunks of 2
        (_m(0, 1, 2, 3, 4, 9), RankConfig(n_steps=5, overrun=False, rank_batch_size=2), [(0, 1), (2, 3), (4,)], (4,)),
        # batched first part, then overrun one at a time
        (
            _m(-5, -4, -3, -2, -1, 1),
            RankConfig(n_steps=3, overrun=True, rank_batch_size=2),
            [(0, 1), (2,), (3,), (4,), (5,)],
            (5,),
        ),
        # tie in confidence: the lower index (better anchor) wins
        (_m(1, 1, 0), RankConfig(n_steps=3, overrun=False), [(0, 1, 2)], (0,)),
    ],
)
def test_rank_type1(
    margins: dict[int, float], cfg: RankConfig, expected_calls: list, expected_selected: tuple[int, ...]
) -> None:
    scorer = Scripted(margins)
    r = rank_type1(len(margins), scorer, cfg)
    assert scorer.calls == expected_calls
    assert r.selected == expected_selected
    scored = tuple(i for call in expected_calls for i in call)
    assert r.scored == scored
    assert r.passes == len(scored)
    assert set(r.confidence) == set(scored)
    for i in scored:
        assert r.confidence[i] == pytest.approx(sig(margins[i]))


def test_rank_type1_no_rois() -> None:
    scorer = Scripted({})
    r = rank_type1(0, scorer, RankConfig())
    assert (r.scored, r.confidence, r.selected, r.passes) == ((), {}, (), 0)
    assert scorer.calls == []


@pytest.mark.parametrize(
    "margins",
    [
        _m(-1, 2, 0.5, -3, 4, 1),
        _m(-1, -2, -3, -4, -5, -0.5, 2, 3, -9),  # overrun
        _m(-4, -3, -2, -1, -0.5, -0.2),  # overrun to exhaustion
        _m(0.3, 0.3, 0.3, 0.3),  # ties
    ],
)
@pytest.mark.parametrize("n_steps", [1, 3, 4, 6])
def test_batched_equals_one_at_a_time(margins: dict[int, float], n_steps: int) -> None:
    one, eight = Scripted(margins), Scripted(margins)
    r1 = rank_type1(len(margins), one, RankConfig(n_steps=n_steps, overrun=True, rank_batch_size=1))
    r8 = rank_type1(len(margins), eight, RankConfig(n_steps=n_steps, overrun=True, rank_batch_size=8))
    assert r1.confidence == r8.confidence
    assert r1.selected == r8.selected
    assert r1.scored == r8.scored
    assert r1.passes == r8.passes
    assert all(len(c) == 1 for c in one.calls)
    assert sum(len(c) for c in one.calls) == sum(len(c) for c in eight.calls)  # same number of sequences scored


@pytest.mark.parametrize(
    ("margins", "cfg", "expected_selected", "expected_calls"),
    [
        # c_Yes = sigmoid: 0.5, 0.881, 0.622, 0.269, 0.953 -> > 0.6 kept, best first
        (_m(0.0, 2.0, 0.5, -1.0, 3.0), RankConfig(t_type2=0.6), (4, 1, 2), [(0, 1, 2, 3, 4)]),
        # zoomeye scale 2p - 1: 0, 0.762, 0.245, -0.462, 0.905 -> only 4 and 1 above 0.6
        (_m(0.0, 2.0, 0.5, -1.0, 3.0), RankConfig(t_type2=0.6, conf_scale="zoomeye"), (4, 1), [(0, 1, 2, 3, 4)]),
        # strict >: c_Yes exactly 0.5 at t_type2 0.5 is not kept
        (_m(0.0, 0.0, 1.0), RankConfig(t_type2=0.5), (2,), [(0, 1, 2)]),
        # nothing passes
        (_m(-1.0, -2.0), RankConfig(t_type2=0.6), (), [(0, 1)]),
        # every ROI is scored whatever n_steps / overrun say, in chunks of rank_batch_size
        (
            _m(1.0, 1.0, 2.0, 0.0, 3.0),
            RankConfig(n_steps=1, overrun=False, rank_batch_size=2, t_type2=0.6),
            (4, 2, 0, 1),
            [(0, 1), (2, 3), (4,)],
        ),  # equal confidences (0, 1): index order
    ],
)
def test_rank_type2(
    margins: dict[int, float], cfg: RankConfig, expected_selected: tuple[int, ...], expected_calls: list
) -> None:
    scorer = Scripted(margins)
    r = rank_type2(len(margins), scorer, cfg)
    assert r.selected == expected_selected
    assert scorer.calls == expected_calls
    assert r.scored == tuple(range(len(margins)))
    assert r.passes == len(margins)
    for i, m in margins.items():
        assert r.confidence[i] == pytest.approx(sig(m))  # reported confidence is P(Yes) in [0, 1]


def test_rank_type2_no_rois() -> None:
    scorer = Scripted({})
    r = rank_type2(0, scorer, RankConfig())
    assert (r.scored, r.confidence, r.selected, r.passes) == ((), {}, (), 0)
    assert scorer.calls == []


@pytest.mark.parametrize(
    ("margin", "scale", "expected"),
    [
        (0.0, "softmax", 0.5),  # Yes and No equally likely
        (0.0, "zoomeye", 0.0),
        (np.log(3), "softmax", 0.75),  # odds 3:1
        (np.log(3), "zoomeye", 0.5),  # 2 * 0.75 - 1
        (-np.log(3), "softmax", 0.25),
        (-np.log(3), "zoomeye", -0.5),
        (50.0, "softmax", 1.0),  # saturates, no overflow
        (-800.0, "softmax", 0.0),  # exp overflow side: still 0
    ],
)
def test_confidence_from_margin(margin: float, scale: str, expected: float) -> None:
    out = confidence_from_margin(np.array([margin]), scale)
    assert out.shape == (1,)
    assert out[0] == pytest.approx(expected, abs=1e-12)


def test_confidence_from_margin_vector() -> None:
    out = confidence_from_margin(np.array([-np.log(3), 0.0, np.log(3)]))
    assert np.allclose(out, [0.25, 0.5, 0.75])
    assert np.allclose(confidence_from_margin(np.array([-np.log(3), 0.0, np.log(3)]), "zoomeye"), [-0.5, 0, 0.5])
