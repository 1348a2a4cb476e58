"""PatchGrid: coordinate conversions between image pixels, the token grid, the model input and crops."""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextlib import nullcontext as DoesNotRaise

import numpy as np
import pytest

from focus_tool.grid import PatchGrid

SIZES = [(512, 512), (1000, 500), (500, 1000), (2048, 300), (301, 1999), (1000, 501)]


@pytest.mark.parametrize(
    ("image_wh", "expected_view"),
    [
        ((512, 512), (0, 0, 512, 512)),  # square: no pad
        ((1000, 500), (0, -250, 1000, 750)),  # wide: pad band above and below
        ((500, 1000), (-250, 0, 750, 1000)),  # tall: pad band left and right
        ((2048, 300), (0, -874, 2048, 1174)),  # very wide: (2048 - 300) // 2 = 874
        ((301, 1999), (-849, 0, 1150, 1999)),  # odd sizes: (1999 - 301) // 2 = 849
        ((1000, 501), (0, -249, 1000, 751)),  # odd difference 499: floor puts the extra pixel below
    ],
)
def test_padded_square_view(image_wh: tuple[int, int], expected_view: tuple[int, int, int, int]) -> None:
    g = PatchGrid.padded_square(image_wh, 24, 336)
    assert g.view_xyxy == expected_view
    w, h = image_wh
    s = max(w, h)
    assert (-g.view_xyxy[0], -g.view_xyxy[1]) == ((s - w) // 2, (s - h) // 2)
    assert (g.rows, g.cols, g.input_wh) == (24, 24, (336, 336))
    assert g.cell_wh == (s / 24, s / 24)


@pytest.mark.parametrize("image_wh", SIZES)
@pytest.mark.parametrize("side", [4, 24])
def test_cells_image_round_trip(image_wh: tuple[int, int], side: int) -> None:
    g = PatchGrid.padded_square(image_wh, side, 336)
    rng = np.random.default_rng(side)
    c0 = rng.uniform(0, side - 1, size=(10, 2))
    cells = np.concatenate([c0, c0 + rng.uniform(0.5, 1, size=(10, 2))], axis=1)
    assert np.allclose(g.image_xyxy_to_cells(g.cells_to_image_xyxy(cells)), cells)
    xy0 = rng.uniform(0, min(image_wh) / 2, size=(10, 2))
    px = np.concatenate([xy0, xy0 + 5], axis=1)
    assert np.allclose(g.cells_to_image_xyxy(g.image_xyxy_to_cells(px)), px)


@pytest.mark.parametrize("image_wh", SIZES)
def test_image_input_round_trip(image_wh: tuple[int, int]) -> None:
    g = PatchGrid.padded_square(image_wh, 24, 336)
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1, size=(20, 2)) * np.array(image_wh)
    assert np.allclose(g.input_to_image_xy(g.image_to_input_xy(xy)), xy)


@pytest.mark.parametrize(
    ("image_wh", "xy", "expected_input"),
    [
        ((1000, 500), [[0, 0], [1000, 500], [500, 250]], [[0, 84], [336, 252], [168, 168]]),  # 250 px pad band
        ((500, 1000), [[0, 0], [500, 1000]], [[84, 0], [252, 336]]),  # pad left/right
        ((336, 336), [[10, 20]], [[10, 20]]),  # identity scale
    ],
)
def test_image_to_input_values(image_wh: tuple[int, int], xy: list, expected_input: list) -> None:
    g = PatchGrid.padded_square(image_wh, 24, 336)
    assert np.allclose(g.image_to_input_xy(np.array(xy, dtype=float)), expected_input)


@pytest.mark.parametrize(
    ("image_wh", "cells", "expected_px"),
    [
        ((1000, 500), [1, 1, 2, 2], [250, 0, 500, 250]),  # first image row of cells starts at y = 0
        ((1000, 500), [0, 0, 4, 4], [0, -250, 1000, 750]),  # the whole grid = the padded square
        ((500, 1000), [0, 0, 1, 1], [-250, 0, 0, 250]),  # a pad cell left of the image
        ((512, 512), [1, 2, 3, 4], [128, 256, 384, 512]),
    ],
)
def test_cells_to_image_values(image_wh: tuple[int, int], cells: list, expected_px: list) -> None:
    g = PatchGrid.padded_square(image_wh, 4, 336)
    assert np.allclose(g.cells_to_image_xyxy(np.array(cells, dtype=float)), [expected_px])


def _rows(*idx: int) -> np.ndarray:
    m = np.zeros((4, 4), dtype=bool)
    m[list(idx), :] = True
    return m


def _cols(*idx: int) -> np.ndarray:
    m = np.zeros((4, 4), dtype=bool)
    m[:, list(idx)] = True
    return m


@pytest.mark.parametrize(
    ("image_wh", "side", "expected"),
    [
        ((512, 512), 4, np.zeros((4, 4), dtype=bool)),  # square: no pad
        ((1000, 500), 4, _rows(0, 3)),  # rows span y -250..0 and 500..750: wholly pad
        ((500, 1000), 4, _cols(0, 3)),  # transposed
        ((2048, 300), 4, _rows(0, 3)),  # rows 1 (-362..150) and 2 (150..662) touch the image
        ((301, 1999), 4, _cols(0, 3)),  # cols 1 (-349.25..150.5) and 2 (150.5..650.25) touch it
        ((1000, 500), 3, np.zeros((3, 3), dtype=bool)),  # cells 333 px high straddle the band edge: not pad
    ],
)
def test_padding_mask(image_wh: tuple[int, int], side: int, expected: np.ndarray) -> None:
    g = PatchGrid.padded_square(image_wh, side, 336)
    mask = g.padding_mask()
    assert mask.shape == (side, side)
    assert np.array_equal(mask, expected)


def test_padding_mask_24_grid_wide() -> None:
    # 1000 x 500 on 24 x 24: cell 41.67 px, pad 250 px above -> rows 0..5 end at <= 0 (row 5 ends at 0.0);
    # the image ends at y = 500 = -250 + 18 * 41.67 -> rows 18..23 are pad.
    mask = PatchGrid.padded_square((1000, 500), 24, 336).padding_mask()
    assert mask[:, 0].tolist() == [True] * 6 + [False] * 12 + [True] * 6
    assert (mask == mask[:, :1]).all()  # whole rows


@pytest.mark.parametrize(
    ("image_wh", "xyxy", "expected"),
    [
        ((1000, 500), [10.2, 20.7, 30.1, 40.0], [10, 20, 31, 40]),  # floor of x0/y0, ceil of x1/y1
        ((1000, 500), [-10.5, -3, 1000.2, 499.1], [0, 0, 1000, 500]),  # clipped to the image
        ((1000, 500), [0, -250, 1000, 750], [0, 0, 1000, 500]),  # the padded square -> the image
        ((500, 1000), [-250, 10, 0, 20], [0, 10, 0, 20]),  # wholly in the pad: zero width, still inside
        ((301, 1999), [300.5, 1998.5, 400, 2500], [300, 1998, 301, 1999]),  # odd sizes
    ],
)
def test_to_int_xyxy(image_wh: tuple[int, int], xyxy: list, expected: list) -> None:
    g = PatchGrid.padded_square(image_wh, 24, 336)
    out = g.to_int_xyxy(np.array(xyxy, dtype=float))
    assert out.dtype == np.int64
    assert out.tolist() == [expected]


@pytest.mark.parametrize("image_wh", SIZES)
def test_to_int_xyxy_every_cell_inside(image_wh: tuple[int, int]) -> None:
    g = PatchGrid.padded_square(image_wh, 24, 336)
    r, c = np.meshgrid(np.arange(24), np.arange(24), indexing="ij")
    cells = np.stack([c, r, c + 1, r + 1], axis=-1).reshape(-1, 4).astype(float)
    out = g.to_int_xyxy(g.cells_to_image_xyxy(cells))
    w, h = image_wh
    assert (out[:, [0, 2]] >= 0).all() and (out[:, [0, 2]] <= w).all()
    assert (out[:, [1, 3]] >= 0).all() and (out[:, [1, 3]] <= h).all()
    # a cell that is not padding keeps a positive area after clipping
    keep = ~g.padding_mask().reshape(-1)
    assert ((out[keep, 2] > out[keep, 0]) & (out[keep, 3] > out[keep, 1])).all()


@pytest.mark.parametrize(
    ("side", "factor", "expected_side"),
    [
        (24, 1, 24),  # factor 1: the same grid
        (24, 2, 12),
        (24, 5, 5),  # ceil mode: 24 / 5 -> 5, the view grows past the last cell
        (4, 3, 2),
    ],
)
@pytest.mark.parametrize("image_wh", [(1000, 500), (301, 1999)])
def test_downsampled(image_wh: tuple[int, int], side: int, factor: int, expected_side: int) -> None:
    g = PatchGrid.padded_square(image_wh, side, 336)
    d = g.downsampled(factor)
    assert (d.rows, d.cols) == (expected_side, expected_side)
    assert d.view_xyxy[:2] == g.view_xyxy[:2]  # same origin
    assert np.allclose(d.cell_wh, np.array(g.cell_wh) * factor)  # a pooled cell = factor x factor cells
    assert d.image_wh == g.image_wh and d.input_wh == g.input_wh
    # pooled cell (i, j) covers original cells [i*f, (i+1)*f)
    got = d.cells_to_image_xyxy(np.array([[1, 1, 2, 2]], dtype=float))
    want = g.cells_to_image_xyxy(np.array([[factor, factor, 2 * factor, 2 * factor]], dtype=float))
    assert np.allclose(got, want)


def test_downsampled_24_by_5_view() -> None:
    d = PatchGrid.padded_square((1000, 500), 24, 336).downsampled(5)
    assert np.allclose(d.view_xyxy, (0, -250, 25 * 1000 / 24, -250 + 25 * 1000 / 24))


@pytest.mark.parametrize(
    ("crop_xyxy", "origin", "expected_image"),
    [
        ([0, 0, 10, 10], (100, 50), [100, 50, 110, 60]),
        ([5.5, 2, 7, 9], (0, 0), [5.5, 2, 7, 9]),  # origin (0, 0): identity
        ([0, 0, 1, 1], (12.5, 3.25), [12.5, 3.25, 13.5, 4.25]),  # fractional origin
    ],
)
def test_crop_image_conversions(crop_xyxy: list, origin: tuple[float, float], expected_image: list) -> None:
    img = PatchGrid.crop_to_image_xyxy(np.array(crop_xyxy, dtype=float), origin)
    assert np.allclose(img, [expected_image])
    assert np.allclose(PatchGrid.image_to_crop_xyxy(img, origin), [crop_xyxy])


def test_stretched() -> None:
    g = PatchGrid.stretched((640, 480), 12, 16, (448, 336))
    assert g.view_xyxy == (0.0, 0.0, 640.0, 480.0)
    assert g.cell_wh == (40.0, 40.0)
    assert not g.padding_mask().any()
    assert np.allclose(g.image_to_input_xy(np.array([[640.0, 480.0]])), [[448, 336]])


@pytest.mark.parametrize(
    ("kwargs", "raises"),
    [
        (
            {"image_wh": (10, 10), "view_xyxy": (0, 0, 10, 10), "rows": 1, "cols": 1, "input_wh": (10, 10)},
            DoesNotRaise(),
        ),
        (
            {"image_wh": (10, 10), "view_xyxy": (0, 0, 10, 10), "rows": 0, "cols": 1, "input_wh": (10, 10)},
            pytest.raises(ValueError, match="at least 1 x 1"),
        ),  # empty grid
        (
            {"image_wh": (10, 10), "view_xyxy": (0, 0, 0, 10), "rows": 1, "cols": 1, "input_wh": (10, 10)},
            pytest.raises(ValueError, match="positive size"),
        ),  # zero-width view
    ],
)
def test_grid_validation(kwargs: dict, raises: AbstractContextManager) -> None:
    with raises:
        PatchGrid(**kwargs)
