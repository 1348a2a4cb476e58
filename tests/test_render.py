"""The overlay picture: heat and outline styles, rank colours, the legend, boxes where the result says."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from focus_tool.render import RANK_COLOURS, overlay, rank_colour
from focus_tool.result import FocusResult, ForwardPasses, Region, RelevanceMapOut

W, H = 800, 600


def _result(regions: list[Region], with_map: bool = True) -> FocusResult:
    values = np.full((4, 4), 0.01)
    values[1, 1] = 1.0
    maps = [RelevanceMapOut(target="red card", rows=4, cols=4, values=values.tolist(), view_xyxy=(0, 0, W, H))]
    return FocusResult(
        model_id="test",
        image_wh=(W, H),
        question="What is the color of the dots on the red card?",
        answer="white",
        targets=["red card"],
        regions=regions,
        relevance_maps=maps if with_map else [],
        forward_passes=ForwardPasses(search=3, answer=1, aux=1),
        prefill_tokens=0,
    )


REGIONS = [
    Region(
        id="r1", box=(20, 10, 300, 320), confidence=0.98, target="red card", rank=1, anchor_score=3.0, selected=True
    ),
    Region(id="r2", box=(420, 300, 560, 440), confidence=0.10, target="red card", rank=2, anchor_score=2.0),
    Region(id="r3", box=(560, 10, 760, 180), confidence=0.02, target="red card", rank=3, anchor_score=1.5),
]
IMAGE = Image.fromarray(np.full((H, W, 3), 200, dtype=np.uint8))


def _px(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(int)


def test_rank_colours_are_distinct_and_rank_one_is_its_own() -> None:
    assert len(set(RANK_COLOURS)) == len(RANK_COLOURS)
    assert rank_colour(1) == RANK_COLOURS[0]
    assert rank_colour(1) not in {rank_colour(r) for r in range(2, 10)}
    assert rank_colour(7) == RANK_COLOURS[-1]


@pytest.mark.parametrize("style", ["heat", "outline"])
def test_boxes_are_drawn_in_their_rank_colour_on_the_box_edge(style: str) -> None:
    out = _px(overlay(IMAGE, _result(REGIONS), style=style, legend=False))  # type: ignore[arg-type]
    assert out.shape == (H, W, 3)
    for r in REGIONS:
        x0, y0, x1, y1 = r.box
        mid = (x0 + x1) // 2
        assert tuple(out[y1 - 1, mid]) == rank_colour(r.rank), (r.id, style)  # bottom edge, inside the box
        assert tuple(out[(y0 + y1) // 2, x0 + 1]) == rank_colour(r.rank), (r.id, style)  # left edge


def test_outline_style_leaves_the_image_unchanged_outside_the_boxes() -> None:
    out = _px(overlay(IMAGE, _result(REGIONS), style="outline", legend=False))
    heat = _px(overlay(IMAGE, _result(REGIONS), style="heat", legend=False))
    far = (slice(450, 600), slice(0, 80))  # a patch away from every box (and its tag)
    assert (out[far] == 200).all()
    # the map's peak cell (row 1, col 1 of 4 x 4 over 800 x 600) is lit in heat style only
    assert (heat[210, 290] != 200).any() and (out[210, 290] == 200).all()


def test_the_legend_lists_the_regions_in_a_free_corner() -> None:
    plain = _px(overlay(IMAGE, _result(REGIONS), style="outline", legend=False))
    with_legend = _px(overlay(IMAGE, _result(REGIONS), style="outline"))
    changed = (plain != with_legend).any(axis=-1)
    ys, xs = np.nonzero(changed)
    assert len(ys) > 0, "no legend drawn"
    # one panel, in the corner that hides least of the boxes: here bottom-left (the top corners hold r1 and r3)
    assert ys.min() > H / 2 and xs.max() < W / 2
    # its swatches are the rank colours of the listed regions
    panel = with_legend[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].reshape(-1, 3)
    colours = {tuple(p) for p in panel}
    assert all(rank_colour(r.rank) in colours for r in REGIONS)


def test_no_legend_on_a_tiny_picture_and_no_regions_is_fine() -> None:
    tiny = Image.new("RGB", (40, 30), (200, 200, 200))
    out = overlay(tiny, _result([], with_map=False), style="outline")
    assert (_px(out) == 200).all()  # nothing fits: no legend, no boxes, image unchanged
    big = overlay(IMAGE, _result([], with_map=False))
    assert (_px(big) != 200).any()  # "no regions" is said in the legend


def test_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="style"):
        overlay(IMAGE, _result(REGIONS), style="glow")  # type: ignore[arg-type]
