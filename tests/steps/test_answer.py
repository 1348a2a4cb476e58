"""Stage VI: the image the answer pass sees (docs/method.md, Stage VI, global-view models)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from focus_tool.config import AnswerConfig
from focus_tool.ops.images import CLIP_MEAN_RGB
from focus_tool.steps.answer import CONTEXT_CAPTION, CROP_CAPTION, answer_view, crop, focus_views, outline_width

CFG = AnswerConfig(t_obj_dist=50.0, canvas_cell=32)  # gap = 32 // 16 = 2 px, a canvas cell pitch of 34 px
RED, BLUE = (255, 0, 0), (0, 0, 255)


def _two_colour(w: int = 200, h: int = 100) -> Image.Image:
    """Left half red, right half blue."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[:, : w // 2] = RED
    a[:, w // 2 :] = BLUE
    return Image.fromarray(a)


def _b(*xyxy: float) -> np.ndarray:
    return np.array(xyxy, dtype=np.float64)


@pytest.mark.parametrize(
    ("boxes", "type2", "expected_mode", "expected_size", "expected_boxes"),
    [
        ([_b(10, 20, 50, 60)], False, "crop", (40, 40), [[10, 20, 50, 60]]),  # one target: its crop
        ([_b(10.2, 20.7, 49.5, 60.1)], False, "crop", (40, 41), [[10.2, 20.7, 49.5, 60.1]]),  # rounded outward
        (
            [_b(10, 10, 30, 30), _b(40, 20, 60, 50)],
            False,
            "union",
            (50, 40),
            [[10, 10, 60, 50]],
        ),  # centres (20, 20), (50, 35): 33.5 px apart <= 50 -> union
        (
            [_b(0, 0, 20, 20), _b(30, 40, 50, 60)],
            False,
            "union",
            (50, 60),
            [[0, 0, 50, 60]],
        ),  # centres exactly 50 px apart: not farther than t_obj_dist -> union
        (
            [_b(0, 0, 20, 20), _b(170, 70, 190, 90)],
            False,
            "canvas",
            (70, 70),
            [[0, 0, 20, 20], [170, 70, 190, 90]],
        ),  # 183 px apart -> canvas, ordinal 2 x 2 grid: 2 * 34 + 2
        (
            [_b(10, 10, 40, 40), _b(30, 30, 60, 60), _b(150, 10, 180, 40)],
            True,
            "canvas",
            (70, 36),
            [[10, 10, 60, 60], [150, 10, 180, 40]],
        ),  # type-2: the first two overlap and merge; 2 boxes -> 2 columns x 1 row
        (
            [np.array([[10, 10, 40, 40], [30, 30, 60, 60]], dtype=float)],
            True,
            "crop",
            (50, 50),
            [[10, 10, 60, 60]],
        ),  # type-2 (M, 4) input, all merged into one box -> its crop
        ([], False, "full", (200, 100), np.zeros((0, 4))),  # no boxes: the whole image
        ([np.zeros((0, 4))], True, "full", (200, 100), np.zeros((0, 4))),  # type-2 with nothing kept
    ],
)
def test_answer_view(
    boxes: list[np.ndarray], type2: bool, expected_mode: str, expected_size: tuple[int, int], expected_boxes: list
) -> None:
    image = _two_colour()
    view = answer_view(image, boxes, type2=type2, cfg=CFG)
    assert view.mode == expected_mode
    assert view.image.size == expected_size
    assert np.allclose(view.boxes_xyxy, np.asarray(expected_boxes, dtype=float).reshape(-1, 4))
    assert view.boxes_xyxy.shape == np.asarray(expected_boxes).reshape(-1, 4).shape


def test_crop_pixels() -> None:
    image = _two_colour()
    view = answer_view(image, [_b(10, 20, 50, 60)], type2=False, cfg=CFG)
    assert np.array_equal(np.asarray(view.image), np.asarray(image)[20:60, 10:50])


def test_full_view_is_the_image() -> None:
    image = _two_colour()
    view = answer_view(image, [], type2=False, cfg=CFG)
    assert np.array_equal(np.asarray(view.image), np.asarray(image))


def _close(px: tuple[int, ...], rgb: tuple[int, int, int], tol: int = 8) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(px[:3], rgb, strict=True))


@pytest.mark.parametrize("blue_first", [True, False])
def test_canvas_keeps_left_right_order(blue_first: bool) -> None:
    # a blue box on the right and a red box on the left, same height, 140 px apart (> 50): canvas.
    # ordinal grid: column = rank of centre x -> red in column 0, blue in column 1, whatever the input order.
    red_box, blue_box = _b(10, 40, 50, 80), _b(150, 40, 190, 80)
    boxes = [blue_box, red_box] if blue_first else [red_box, blue_box]
    view = answer_view(_two_colour(), boxes, type2=False, cfg=CFG)
    assert view.mode == "canvas"
    canvas = view.image
    assert canvas.size == (70, 70)
    # centre of column c, row r: (2 + 34 c + 16, 2 + 34 r + 16); y ties keep input order for the row
    red_row, blue_row = (1, 0) if blue_first else (0, 1)
    assert _close(canvas.getpixel((18, 18 + 34 * red_row)), RED)
    assert _close(canvas.getpixel((52, 18 + 34 * blue_row)), BLUE)
    # the other cell of each column is the pad colour
    assert canvas.getpixel((18, 18 + 34 * blue_row)) == CLIP_MEAN_RGB
    assert canvas.getpixel((52, 18 + 34 * red_row)) == CLIP_MEAN_RGB
    # left half of the canvas: red or pad only; right half: blue or pad only
    a = np.asarray(canvas).astype(int)
    assert (a[:, :35, 2] <= a[:, :35, 0]).all()  # no blue-dominant pixel on the left
    assert (a[:, 35:, 0] <= a[:, 35:, 2] + 20).all()  # no red-dominant pixel on the right


def test_canvas_keeps_above_below_order() -> None:
    # top half red, bottom half blue; a red box above a blue box, 140 px apart (> 50): canvas
    a = np.zeros((200, 100, 3), dtype=np.uint8)
    a[:100] = RED
    a[100:] = BLUE
    image = Image.fromarray(a)
    boxes = [_b(30, 150, 70, 190), _b(30, 10, 70, 50)]  # blue (bottom) first
    view = answer_view(image, boxes, type2=False, cfg=CFG)
    assert view.mode == "canvas"
    # row = rank of centre y: red in row 0, blue in row 1; x ties keep the input order: blue col 0, red col 1
    assert _close(view.image.getpixel((52, 18)), RED)
    assert _close(view.image.getpixel((18, 52)), BLUE)


def test_type2_max_crops() -> None:
    boxes = [np.array([[0, 0, 10, 10], [50, 0, 60, 10], [100, 0, 110, 10]], dtype=float)]
    view = answer_view(_two_colour(), boxes, type2=True, cfg=AnswerConfig(canvas_cell=32, max_crops=2))
    assert view.mode == "canvas"
    assert view.boxes_xyxy.tolist() == [[0, 0, 10, 10], [50, 0, 60, 10]]


def test_type2_reading_order() -> None:
    # three disjoint boxes: ceil(sqrt(3)) = 2 columns, 2 rows; reading order by y then x:
    # top-right blue box (y 0) first, then the red box (y 60) -> blue at (col 0, row 0), red at (col 1, row 0),
    # the bottom red box at (col 0, row 1)
    boxes = [np.array([[10, 60, 30, 80], [150, 0, 170, 20], [10, 80, 30, 100]], dtype=float)]
    # the first and third touch (y = 80): IoU 0, not merged
    view = answer_view(_two_colour(), boxes, type2=True, cfg=CFG)
    assert view.mode == "canvas"
    assert view.image.size == (70, 70)
    assert _close(view.image.getpixel((18, 18)), BLUE)
    assert _close(view.image.getpixel((52, 18)), RED)
    assert _close(view.image.getpixel((18, 52)), RED)
    assert view.image.getpixel((52, 52)) == CLIP_MEAN_RGB  # empty fourth cell


@pytest.mark.parametrize(
    ("xyxy", "expected_box"),
    [
        (_b(10, 20, 50, 60), (10, 20, 50, 60)),
        (_b(-5, -5, 20, 20), (0, 0, 20, 20)),  # clipped to the image
        (_b(190.5, 90.5, 250, 150), (190, 90, 200, 100)),  # rounded outward, clipped
        (_b(10, 10, 10, 10), (10, 10, 11, 11)),  # degenerate: at least 1 px
    ],
)
def test_crop(xyxy: np.ndarray, expected_box: tuple[int, int, int, int]) -> None:
    image = _two_colour()
    out = crop(image, xyxy)
    x0, y0, x1, y1 = expected_box
    assert out.size == (x1 - x0, y1 - y0)
    assert np.array_equal(np.asarray(out), np.asarray(image)[y0:y1, x0:x1])


# ---------------------------------------------------------------------------------------------- multi-image views


def _grey(w: int = 200, h: int = 100) -> Image.Image:
    return Image.new("RGB", (w, h), (128, 128, 128))


@pytest.mark.parametrize(("long_side", "width"), [(100, 1), (200, 1), (1000, 3), (2246, 7), (7431, 22)])
def test_outline_width_is_3px_per_1000px(long_side: int, width: int) -> None:
    assert outline_width(long_side) == width


def test_focus_views_layout_and_order() -> None:
    image = _two_colour()
    boxes = np.array([[10, 10, 30, 40], [120, 20, 180, 50], [60, 60, 70, 90]], dtype=float)
    conf = np.array([0.4, 0.9, 0.6])
    views = focus_views(image, boxes, conf, AnswerConfig())
    ctx, *rest = views.parts
    assert isinstance(ctx, Image.Image) and ctx.size == image.size
    assert rest[0] == CONTEXT_CAPTION["full"]
    crops, captions = rest[1::2], rest[2::2]
    assert captions == [CROP_CAPTION.format(k=k) for k in (1, 2, 3)]
    assert captions[0] == "This is a zoomed-in view of focus region 1."
    assert views.boxes_xyxy.tolist() == boxes[[1, 2, 0]].tolist()  # highest c_Yes first
    assert [c.size for c in crops] == [(60, 30), (10, 30), (20, 30)]
    for c, b in zip(crops, views.boxes_xyxy, strict=True):  # crops are clean: no outline in them
        x0, y0, x1, y1 = (int(v) for v in b)
        assert np.array_equal(np.asarray(c), np.asarray(image)[y0:y1, x0:x1])
    assert views.context_xyxy == (0, 0, 200, 100)


def test_focus_views_outlines_every_roi_in_red() -> None:
    image = _grey(2000, 600)  # long side 2000 -> 6 px
    t = outline_width(2000)
    assert t == 6
    boxes = np.array([[100, 100, 300, 250], [900, 300, 1000, 500]], dtype=float)
    ctx = focus_views(image, boxes, np.array([0.7, 0.8]), AnswerConfig()).parts[0]
    assert isinstance(ctx, Image.Image)
    a = np.asarray(ctx)
    red = (a == (255, 0, 0)).all(-1)
    for x0, y0, x1, y1 in boxes.astype(int):
        assert red[y0 : y0 + t, x0:x1].all() and red[y1 - t : y1, x0:x1].all()  # top and bottom bands
        assert red[y0:y1, x0 : x0 + t].all() and red[y0:y1, x1 - t : x1].all()  # left and right bands
        assert not red[y0 + t : y1 - t, x0 + t : x1 - t].any()  # inside untouched
        assert not red[y0 - 1, x0:x1].any() and not red[y0:y1, x1].any()  # nothing outside the box
    ring = sum(int((x1 - x0) * (y1 - y0) - (x1 - x0 - 2 * t) * (y1 - y0 - 2 * t)) for x0, y0, x1, y1 in boxes)
    assert int(red.sum()) == ring  # no other pixel changed colour
    assert np.array_equal(np.asarray(image), np.full((600, 2000, 3), 128, dtype=np.uint8))  # input untouched


def test_focus_views_outline_is_red_whatever_the_question() -> None:
    boxes = np.array([[10, 10, 50, 50]], dtype=float)
    ctx = focus_views(_grey(), boxes, np.array([0.9]), AnswerConfig())
    assert ctx.parts[0].getpixel((10, 30)) == (255, 0, 0)  # type: ignore[union-attr]


def test_focus_views_caps_crops_but_outlines_all() -> None:
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], dtype=float)
    conf = np.array([0.1, np.nan, 0.8, 0.8])  # unscored last; ties keep the input order
    views = focus_views(_grey(), boxes, conf, AnswerConfig(max_crops=2))
    assert views.boxes_xyxy.tolist() == [[40, 0, 50, 10], [60, 0, 70, 10]]
    assert len(views.parts) == 2 + 2 * 2
    a = np.asarray(views.parts[0])
    assert all((a[0, x0] == (255, 0, 0)).all() for x0 in (0, 20, 40, 60))  # every ROI outlined
    order = focus_views(_grey(), boxes, conf, AnswerConfig(max_crops=6)).boxes_xyxy
    assert order[:, 0].tolist() == [40, 60, 0, 20]


def test_focus_views_union_context() -> None:
    image = _two_colour()
    boxes = np.array([[10.5, 20, 40, 50], [60, 30, 90.2, 80]], dtype=float)
    views = focus_views(image, boxes, np.array([0.5, 0.6]), AnswerConfig(context_image="union"))
    assert views.context_xyxy == (10, 20, 91, 80)  # union of the outward-rounded boxes
    ctx = views.parts[0]
    assert isinstance(ctx, Image.Image) and ctx.size == (81, 60)
    assert views.parts[1] == CONTEXT_CAPTION["union"]
    a = np.asarray(ctx)
    assert (a[0, 0:30] == (255, 0, 0)).all()  # first box's top edge, at the context's origin
    assert (a[10, 50:81] == (255, 0, 0)).all()  # second box's top edge (y 30 -> 10, x 60..91 -> 50..81)
    assert np.array_equal(a[15, 15], np.asarray(image)[35, 25])  # inside a box: the image pixel at its offset


def test_focus_views_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="confidences"):
        focus_views(_grey(), np.zeros((2, 4)), np.zeros(3), AnswerConfig())
    with pytest.raises(ValueError, match="at least one box"):
        focus_views(_grey(), np.zeros((0, 4)), np.zeros(0), AnswerConfig())
