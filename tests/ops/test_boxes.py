"""Box operations on (N, 4) xyxy arrays; expected values worked out by hand."""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextlib import nullcontext as DoesNotRaise

import numpy as np
import pytest

from focus_tool.ops.boxes import (
    box_coverage,
    box_iou,
    expand_to_min_size,
    merge_overlapping,
    nms,
    union_box,
)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([[0, 0, 2, 2]], [[0, 0, 2, 2]], [[1.0]]),  # identical
        ([[0, 0, 2, 2]], [[1, 1, 3, 3]], [[1 / 7]]),  # inter 1, union 4 + 4 - 1
        ([[0, 0, 4, 4]], [[1, 1, 3, 3]], [[0.25]]),  # contained: 4 / 16
        ([[0, 0, 1, 1]], [[1, 0, 2, 1]], [[0.0]]),  # touching edges: no area in common
        ([[0, 0, 1, 1]], [[5, 5, 6, 6]], [[0.0]]),  # disjoint
        ([[0, 0, 0, 0]], [[0, 0, 0, 0]], [[0.0]]),  # both degenerate: 0, not nan
        ([[0, 0, 3, 1]], [[1, 0, 4, 1]], [[0.5]]),  # inter 2, union 4
        (
            [[0, 0, 2, 2], [10, 10, 12, 12]],
            [[0, 0, 2, 2], [1, 1, 3, 3], [10, 10, 12, 12]],
            [[1.0, 1 / 7, 0.0], [0.0, 0.0, 1.0]],
        ),  # (N, M) shape
    ],
)
def test_box_iou(a: list, b: list, expected: list) -> None:
    out = box_iou(np.array(a, dtype=float), np.array(b, dtype=float))
    assert out.shape == np.array(expected).shape
    assert np.allclose(out, expected)


def test_box_iou_is_symmetric() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, size=(6, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 30, size=(6, 2))], axis=1)
    iou = box_iou(boxes, boxes)
    assert np.allclose(iou, iou.T)
    assert np.allclose(np.diag(iou), 1.0)


@pytest.mark.parametrize(
    ("boxes", "target", "expected"),
    [
        ([[0, 0, 2, 2]], [[1, 1, 3, 3]], [[0.25]]),  # a quarter of the target is inside
        ([[0, 0, 10, 10]], [[2, 2, 4, 4]], [[1.0]]),  # target wholly inside
        ([[2, 2, 4, 4]], [[0, 0, 10, 10]], [[0.04]]),  # not symmetric: 4 / 100
        ([[0, 0, 2, 2]], [[5, 5, 6, 6]], [[0.0]]),  # disjoint
        ([[0, 0, 2, 2]], [[1, 1, 1, 1]], [[0.0]]),  # degenerate target: 0, not nan
    ],
)
def test_box_coverage(boxes: list, target: list, expected: list) -> None:
    out = box_coverage(np.array(boxes, dtype=float), np.array(target, dtype=float))
    assert np.allclose(out, expected)


@pytest.mark.parametrize(
    ("xyxy", "scores", "iou_threshold", "expected", "raises"),
    [
        (np.zeros((0, 4)), np.zeros(0), 0.5, [], DoesNotRaise()),  # empty input
        ([[0, 0, 10, 10]], [0.3], 0.5, [0], DoesNotRaise()),  # one box
        (
            [[0, 0, 10, 10], [1, 1, 11, 11]],
            [0.5, 0.9],
            0.5,
            [1],
            DoesNotRaise(),
        ),  # IoU 81/119 > 0.5: the higher score wins
        (
            [[0, 0, 1, 1], [5, 5, 6, 6], [10, 10, 11, 11]],
            [0.1, 0.9, 0.5],
            0.5,
            [1, 2, 0],
            DoesNotRaise(),
        ),  # disjoint: all kept, best score first
        ([[0, 0, 2, 2], [0, 0, 2, 2]], [0.7, 0.7], 0.5, [0], DoesNotRaise()),  # tie: lower index wins
        (
            [[0, 0, 1, 1], [5, 5, 6, 6]],
            [0.7, 0.7],
            0.5,
            [0, 1],
            DoesNotRaise(),
        ),  # tie between disjoint boxes: index order
        (
            [[0, 0, 2, 2], [0, 0, 2, 2]],
            [0.2, 0.8],
            1.0,
            [1, 0],
            DoesNotRaise(),
        ),  # threshold 1 keeps all, even identical boxes
        (
            [[0, 0, 3, 1], [1, 0, 4, 1]],
            [0.9, 0.8],
            0.5,
            [0, 1],
            DoesNotRaise(),
        ),  # IoU exactly 0.5 = threshold: kept (only > drops)
        (
            [[0, 0, 1, 1], [1, 0, 2, 1]],
            [0.9, 0.8],
            0.0,
            [0, 1],
            DoesNotRaise(),
        ),  # threshold 0: touching boxes (IoU 0) both kept
        (
            [[0, 0, 4, 1], [2, 0, 6, 1], [4, 0, 8, 1]],
            [0.9, 0.8, 0.7],
            0.3,
            [0, 2],
            DoesNotRaise(),
        ),  # B dropped by A (IoU 1/3); C overlaps only the dropped B: kept
        ([[0, 0, 1, 1]], [0.5], -0.1, None, pytest.raises(ValueError, match="iou_threshold")),  # below range
        ([[0, 0, 1, 1]], [0.5], 1.1, None, pytest.raises(ValueError, match="iou_threshold")),  # above range
        ([[0, 0, 1, 1], [2, 2, 3, 3]], [0.5], 0.5, None, pytest.raises(ValueError, match="2 boxes but 1")),
    ],
)
def test_nms(
    xyxy: list, scores: list, iou_threshold: float, expected: list | None, raises: AbstractContextManager
) -> None:
    with raises:
        keep = nms(np.asarray(xyxy, dtype=float), np.asarray(scores, dtype=float), iou_threshold)
        assert keep.tolist() == expected
        assert np.issubdtype(keep.dtype, np.integer)


@pytest.mark.parametrize(
    ("xyxy", "expected", "raises"),
    [
        ([[1, 2, 3, 4]], [1, 2, 3, 4], DoesNotRaise()),  # one box: itself
        ([[1, 5, 3, 6], [0, 7, 2, 9], [4, 1, 5, 2]], [0, 1, 5, 9], DoesNotRaise()),  # extremes from different boxes
        ([[0, 0, 2, 2], [10, 10, 12, 12]], [0, 0, 12, 12], DoesNotRaise()),  # disjoint boxes
        (np.zeros((0, 4)), None, pytest.raises(ValueError, match="at least one box")),  # empty
    ],
)
def test_union_box(xyxy: list, expected: list | None, raises: AbstractContextManager) -> None:
    with raises:
        out = union_box(np.asarray(xyxy, dtype=float))
        assert out.shape == (4,)
        assert out.tolist() == expected


@pytest.mark.parametrize(
    ("xyxy", "expected"),
    [
        (np.zeros((0, 4)), np.zeros((0, 4))),  # empty in, (0, 4) out
        ([[0, 0, 2, 2]], [[0, 0, 2, 2]]),  # one box
        ([[0, 0, 2, 2], [5, 5, 6, 6]], [[0, 0, 2, 2], [5, 5, 6, 6]]),  # disjoint: unchanged, order kept
        ([[0, 0, 2, 2], [1, 1, 3, 3]], [[0, 0, 3, 3]]),  # overlapping pair -> union
        ([[0, 0, 1, 1], [1, 0, 2, 1]], [[0, 0, 1, 1], [1, 0, 2, 1]]),  # touching (IoU 0): not merged
        (
            [[0, 0, 2, 2], [1, 1, 3, 3], [2.5, 0, 4, 1]],
            [[0, 0, 4, 3]],
        ),  # C overlaps neither A nor B, but overlaps their union: merged transitively
        (
            [[0, 0, 2, 2], [10, 10, 12, 12], [1, 1, 11, 11]],
            [[0, 0, 12, 12]],
        ),  # a bridging box joins two disjoint ones
    ],
)
def test_merge_overlapping(xyxy: list, expected: list) -> None:
    out = merge_overlapping(np.asarray(xyxy, dtype=float))
    assert out.shape == np.asarray(expected).reshape(-1, 4).shape
    assert np.allclose(out, expected)
    if len(out) > 1:  # invariant: nothing left overlaps
        iou = box_iou(out, out)
        assert np.allclose(iou[~np.eye(len(out), dtype=bool)], 0.0)


@pytest.mark.parametrize(
    ("xyxy", "min_side", "bounds_wh", "expected"),
    [
        ([[10, 10, 12, 12]], 10, (100, 100), [[6, 6, 16, 16]]),  # grown about centre (11, 11)
        ([[0, 0, 50, 50]], 10, (100, 100), [[0, 0, 50, 50]]),  # already big enough: unchanged
        ([[0, 0, 2, 2]], 10, (100, 100), [[0, 0, 10, 10]]),  # at the top-left edge: shifted inside
        ([[98, 98, 100, 100]], 10, (100, 100), [[90, 90, 100, 100]]),  # at the bottom-right edge: shifted inside
        ([[10, 10, 12, 12]], 200, (100, 50), [[0, 0, 100, 50]]),  # min side above the bounds: the whole image
        ([[0, 10, 50, 12]], 10, (100, 100), [[0, 6, 50, 16]]),  # only the short axis grows
        (
            [[10, 10, 12, 12], [40, 40, 80, 80]],
            20,
            (100, 100),
            [[1, 1, 21, 21], [40, 40, 80, 80]],
        ),  # per box
    ],
)
def test_expand_to_min_size(xyxy: list, min_side: float, bounds_wh: tuple[int, int], expected: list) -> None:
    before = np.asarray(xyxy, dtype=float)
    out = expand_to_min_size(before, min_side, bounds_wh)
    assert np.allclose(out, expected)
    assert np.array_equal(before, np.asarray(xyxy, dtype=float))  # input not modified
