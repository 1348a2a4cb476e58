"""ViCrop: box selection on hand-made maps against hand-worked answers; eager-only; the map paths on a tiny LLaVA."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.baselines.vicrop import ViCropConfig, ViCropMethod, bbox_from_att_image_adaptive, high_res_blocks
from focus_tool.errors import FocusError
from tests.tiny_models import tiny_llava


def test_single_peak_picks_ratio_one() -> None:
    """6x6 map over 60x60 px (10-px cells), s = 20. Windows: r 1-1.4 -> 2 cells, 1.6-1.8 -> 3, 2.0 -> 4.
    r=1: first max (x-outer scan) at (x=2, y=1); neighbours 0, 1, 0, 1 -> (1 - 0.5) / 4 = 0.125.
    r=1.6: first max at (1, 0); neighbours (left 0, right 1, down 1) -> (1 - 2/3) / 9 = 0.037. r=2: 0.
    Best r=1: centre (2*10 + 10, 1*10 + 10) = (30, 20), side 20 -> (20, 10, 40, 30)."""
    m = np.zeros((6, 6))
    m[2, 3] = 1.0
    assert bbox_from_att_image_adaptive(m, (60, 60), 20) == (20, 10, 40, 30)


def test_blob_prefers_window_that_fits_it() -> None:
    """3x3 blob of ones at rows/cols 1-3. r=1 (2x2): 4 vs neighbours 2, 4, 2, 4 -> 0.25.
    r=1.6 (3x3): 9 vs 6, 6, 6, 6 -> 1/3 (r=1.8 ties, the first wins). r=2: 0.
    Side 32: centre (1*10 + 15, 1*10 + 15) = (25, 25) -> (9, 9, 41, 41)."""
    m = np.zeros((6, 6))
    m[1:4, 1:4] = 1.0
    assert bbox_from_att_image_adaptive(m, (60, 60), 20) == (9, 9, 41, 41)


def test_peak_at_corner_is_clamped_inside() -> None:
    """Peak at cell (0, 0): r=1 window (0,0), centre (10, 10) = half side: stays; box (0, 0, 20, 20)."""
    m = np.zeros((6, 6))
    m[0, 0] = 1.0
    assert bbox_from_att_image_adaptive(m, (60, 60), 20) == (0, 0, 20, 20)


def test_window_covering_map_returns_whole_image() -> None:
    assert bbox_from_att_image_adaptive(np.ones((2, 2)), (20, 20), 20) == (0, 0, 20, 20)


def test_high_res_blocks() -> None:
    """3000x1500, 1024-px blocks: rows = ceil(1500/1024) = 2, cols = int(2 * 3000 / 1500) = 4, blocks 750 x 750."""
    rows, cols, blocks = high_res_blocks((3000, 1500), 1024)
    assert (rows, cols, len(blocks)) == (2, 4, 8)
    assert blocks[0] == (0, 0, 750, 750) and blocks[-1] == (2250, 750, 3000, 1500)


def test_refuses_sdpa_with_clear_message() -> None:
    adapter = LlavaAdapter(*tiny_llava(seed=0, attn="sdpa"))
    with pytest.raises(FocusError, match=r"eager attention.*'sdpa'.*attn_implementation='eager'"):
        ViCropMethod(adapter)
    with pytest.raises(FocusError, match="eager"):
        adapter.attention_to_image(Image.new("RGB", (40, 30)), ["hi"], 0)


@pytest.mark.parametrize(
    ("variant", "high", "search"),
    [("rel-att", False, 2), ("grad-att", False, 1), ("rel-att", True, 2 * 6), ("grad-att", True, 6)],
)
def test_runs_under_eager(variant: str, high: bool, search: int) -> None:
    adapter = LlavaAdapter(*tiny_llava(seed=0, attn="eager"))
    image = Image.fromarray((np.random.default_rng(0).random((60, 90, 3)) * 255).astype(np.uint8))
    method = ViCropMethod(adapter, ViCropConfig(variant=variant, high=high, block_px=32))  # type: ignore[arg-type]
    result = method.run(image, question="What is the color of the dots on the red card?", options=["a", "b"])
    assert result.method == "vicrop" and result.forward_passes.search == search  # 60 px: 2 rows x 3 cols
    assert result.forward_passes.answer == 1 and len(result.answer_boxes) == 1
    x0, y0, x1, y1 = result.answer_boxes[0]
    assert 0 <= x0 < x1 <= 90 and 0 <= y0 < y1 <= 60
    values = np.array(result.relevance_maps[0].values)
    assert np.isfinite(values).all() and values.min() >= 0
