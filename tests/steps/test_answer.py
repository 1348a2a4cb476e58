"""Stage VI: the image the answer pass sees (spec Sec. 7, global-view models)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from focus_tool.config import AnswerConfig
from focus_tool.ops.images import CLIP_MEAN_RGB
from focus_tool.steps.answer import answer_view, crop

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
