"""The overlay picture: a legend that reads on its own, the answer region left as the model saw it, unscored
regions hidden unless asked for, rank colours and boxes where the result says (issue 17, check 4).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from focus_tool.data import synthetic as syn
from focus_tool.pipeline import FocusPipeline
from focus_tool.render import RANK_COLOURS, drawn_regions, legend_lines, overlay, rank_colour
from focus_tool.render_legend import LEGEND_CHARS, QUESTION_LINES
from focus_tool.result import (
    AnswerEvidence,
    FocusResult,
    ForwardPasses,
    QuestionState,
    Region,
    RelevanceMapOut,
    ResultStatus,
    ResultWarning,
    TargetStatus,
)

W, H = 800, 600
QUESTION = "What is the color of the dots on the red card?"
EVIDENCE = AnswerEvidence(
    kind="options",
    confidence=0.91,
    options={"black": 0.05, "white": 0.91, "cyan": 0.03, "pink": 0.01},
    threshold=0.5,
    low=False,
)
FOUND = TargetStatus(target="red card", state="found", confidence=0.98, threshold=0.5, regions_above=1)


def _result(
    regions: list[Region],
    *,
    with_map: bool = True,
    answer_boxes: list[tuple[int, int, int, int]] | None = None,
    question: str | None = QUESTION,
    evidence: AnswerEvidence | None = EVIDENCE,
    status: ResultStatus | None = None,
) -> FocusResult:
    values = np.full((4, 4), 0.01)
    values[1, 1] = 1.0
    maps = [RelevanceMapOut(target="red card", rows=4, cols=4, values=values.tolist(), view_xyxy=(0, 0, W, H))]
    boxes = [r.box for r in regions if r.selected] if answer_boxes is None else answer_boxes
    return FocusResult(
        model_id="test",
        image_wh=(W, H),
        question=question,
        answer="white" if question else None,
        answer_evidence=evidence if question else None,
        targets=["red card"],
        regions=regions,
        answer_view="crop" if boxes else "full",
        answer_boxes=boxes,
        relevance_maps=maps if with_map else [],
        forward_passes=ForwardPasses(search=3, answer=1, extraction=1),
        prefill_tokens=0,
        status=status or ResultStatus(question="answered_on_region", targets=[FOUND]),
    )


def _region(rid: str, box: tuple[int, int, int, int], conf: float | None, rank: int, selected: bool = False) -> Region:
    return Region(id=rid, box=box, confidence=conf, target="red card", rank=rank, anchor_score=1.0, selected=selected)


REGIONS = [
    _region("r1", (20, 10, 300, 320), 0.98, 1, selected=True),
    _region("r2", (420, 300, 560, 440), 0.10, 2),
    _region("r3", (560, 10, 760, 180), 0.02, 3),
]
UNSCORED = [_region("r4", (100, 400, 300, 560), None, 4), _region("r5", (0, 0, 120, 90), None, 5)]
IMAGE = Image.fromarray(np.full((H, W, 3), 200, dtype=np.uint8))
NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8))


def _px(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(int)


def _inside(px: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return px[y0:y1, x0:x1]


# ---------------------------------------------------------------------------------------------------- the legend


def test_the_legend_starts_with_question_answer_confidence_and_status() -> None:
    status = ResultStatus(
        question="answered_on_region",
        targets=[FOUND],
        warnings=[ResultWarning(code="low_confidence", message="the best region is weak", target="red card")],
    )
    lines = legend_lines(_result(REGIONS, status=status))
    assert lines[0] == f"Q: {QUESTION}"
    assert lines[1] == "A: white   confidence 0.91"
    assert lines[2] == "   white: 0.91 · black: 0.05 · cyan: 0.03 · pink: 0.01"  # most probable first
    assert lines[3] == "status: answered on region r1"
    assert lines[4] == "  red card: found, P(Yes) 0.980"
    assert lines[5] == "warnings: low_confidence"
    assert lines[6:9] == [
        "r1  rank 1  red card  P(Yes) 0.980  <- answer",
        "r2  rank 2  red card  P(Yes) 0.100",
        "r3  rank 3  red card  P(Yes) 0.020",
    ]
    assert lines[9] == "heat: relevance of red card (none over the answer region)"
    assert legend_lines(_result(REGIONS, status=status), style="outline") == lines[:9]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("answered_on_region", "status: answered on region r1"),
        ("answered_on_whole_image", "status: answered on the whole image: nothing was found"),
        ("not_asked", "status: no question asked"),
    ],
)
def test_the_status_says_how_the_question_was_answered(state: QuestionState, expected: str) -> None:
    assert expected in legend_lines(_result(REGIONS, status=ResultStatus(question=state)))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (FOUND, "  red card: found, P(Yes) 0.980"),
        (
            TargetStatus(target="red card", state="not_found", confidence=0.21, threshold=0.5, regions_above=0),
            "  red card: not found, best P(Yes) 0.210 < 0.50",
        ),
        (
            TargetStatus(target="red card", state="ambiguous", confidence=0.97, threshold=0.5, regions_above=2),
            "  red card: ambiguous, 2 regions P(Yes) >= 0.50, best 0.970",
        ),
        (
            TargetStatus(target="red card", state="unverified", confidence=None, threshold=0.5, regions_above=0),
            "  red card: unverified (no existence check)",
        ),
        (
            TargetStatus(target="red card", state="not_found", confidence=None, threshold=0.5, regions_above=0),
            "  red card: not found",
        ),
    ],
)
def test_each_target_shows_its_state_and_p_yes(target: TargetStatus, expected: str) -> None:
    lines = legend_lines(_result(REGIONS, status=ResultStatus(question="answered_on_region", targets=[target])))
    assert expected in lines


def test_a_long_question_is_wrapped_and_cut_and_a_low_answer_says_so() -> None:
    question = "Which   colour\nare the dots " + "on the very small red card near the edge " * 10
    low = EVIDENCE.model_copy(update={"confidence": 0.31, "low": True})
    lines = legend_lines(_result(REGIONS, question=question, evidence=low))
    q_lines = lines[: lines.index(next(t for t in lines if t.startswith("A: ")))]
    assert len(q_lines) == QUESTION_LINES and q_lines[0].startswith("Q: Which colour are the dots")
    assert all(len(t) <= LEGEND_CHARS and "\n" not in t for t in q_lines) and q_lines[-1].endswith("...")
    assert "A: white   confidence 0.31 (low)" in lines


def test_without_evidence_no_confidence_and_without_question_the_targets() -> None:
    lines = legend_lines(_result(REGIONS, evidence=None))
    assert lines[1] == "A: white" and not any("confidence" in t for t in lines)
    assert not any("·" in t for t in lines)  # no option probabilities either
    search = legend_lines(_result(REGIONS, question=None, status=ResultStatus(question="not_asked")))
    assert search[0] == "find: red card" and search[1] == "status: no question asked"


def test_more_than_four_options_are_cut_to_the_four_most_probable() -> None:
    probs = {"a": 0.4, "b": 0.25, "c": 0.15, "d": 0.1, "e": 0.06, "f": 0.04}
    ev = AnswerEvidence(kind="options", confidence=0.4, options=probs, threshold=0.5, low=True)
    lines = legend_lines(_result(REGIONS, evidence=ev))
    assert "   a: 0.40 · b: 0.25 · c: 0.15 · d: 0.10 · +2 more" in lines


# ---------------------------------------------------------------------------------------------- unscored regions


def test_unscored_regions_are_hidden_unless_asked_for_and_answer_regions_always_drawn() -> None:
    used_unscored = _region("r6", (500, 450, 700, 580), None, 6, selected=True)  # answer used it, rank > 5
    result = _result([*REGIONS, *UNSCORED, used_unscored])
    assert [r.id for r in drawn_regions(result)] == ["r1", "r2", "r3", "r6"]
    assert [r.id for r in drawn_regions(result, show_unscored=True)] == ["r1", "r2", "r3", "r4", "r5", "r6"]
    assert "2 more regions not drawn (unscored)" in legend_lines(result)
    assert not any(t.startswith("r4 ") for t in legend_lines(result))
    assert "r4  rank 4  red card  not scored" in legend_lines(result, show_unscored=True)
    # in the picture: r4's line (just below its box) only with show_unscored
    x0, _, x1, y1 = UNSCORED[0].box
    hidden = _px(overlay(IMAGE, result, style="outline", legend=False))
    shown = _px(overlay(IMAGE, result, style="outline", legend=False, show_unscored=True))
    assert (hidden[y1, (x0 + x1) // 2] == 200).all()
    assert tuple(shown[y1, (x0 + x1) // 2]) == rank_colour(4)


# ---------------------------------------------------------------------------------------------- the answer region


@pytest.mark.parametrize("style", ["heat", "outline"])
def test_the_pixels_inside_the_answer_box_are_the_images(style: str) -> None:
    # r2 crosses the answer box and r1 sits in the top-left corner, where the legend would go
    regions = [*REGIONS, _region("r4", (200, 200, 420, 380), 0.6, 4), *UNSCORED]
    result = _result(regions)
    out = overlay(NOISE, result, style=style, show_unscored=True)  # type: ignore[arg-type]
    assert out.size == NOISE.size  # the default keeps the image's scale, so the check is exact
    (box,) = result.answer_boxes
    assert np.array_equal(_inside(_px(out), box), _inside(_px(NOISE), box))
    # ... and the picture did change around it: heat (or lines), boxes, legend
    assert (_px(out) != _px(NOISE)).any(axis=-1).mean() > (0.5 if style == "heat" else 0.01)


def test_the_answer_box_is_outlined_outside_in_its_rank_colour() -> None:
    out = _px(overlay(IMAGE, _result(REGIONS), style="outline", legend=False))
    x0, y0, x1, y1 = REGIONS[0].box
    mid_x, mid_y = (x0 + x1) // 2, (y0 + y1) // 2
    for y, x in ((y1, mid_x), (y0 - 1, mid_x), (mid_y, x0 - 1), (mid_y, x1)):  # the first pixel outside each side
        assert tuple(out[y, x]) == rank_colour(1)
    assert (_inside(out, REGIONS[0].box) == 200).all()


def test_a_union_answer_view_is_framed_and_left_untouched() -> None:
    union = (20, 10, 560, 440)  # the view spans r1 and r2: no region has this box
    result = _result(REGIONS, answer_boxes=[union])
    out = _px(overlay(NOISE, result))
    assert np.array_equal(_inside(out, union), _inside(_px(NOISE), union))
    assert tuple(out[union[3], 300]) == (255, 255, 255)  # the white frame just below it


def test_downscaled_the_answer_pixels_are_those_of_the_downscaled_image() -> None:
    result = _result(REGIONS)
    out = overlay(NOISE, result, max_side=400)
    assert out.width == 400  # (too small for the legend inside: it goes below)
    small = NOISE.resize((400, 300), Image.Resampling.BICUBIC)
    x0, y0, x1, y1 = (v // 2 for v in REGIONS[0].box)  # scale 0.5; the box's edges fall on whole pixels
    assert np.array_equal(_px(out)[y0:y1, x0:x1], _px(small)[y0:y1, x0:x1])


def test_with_no_free_place_the_legend_goes_to_a_margin_and_the_image_keeps_its_coordinates() -> None:
    big = _region("r1", (10, 10, W - 10, H - 10), 0.9, 1, selected=True)  # the answer box fills the picture
    result = _result([big])
    out = overlay(NOISE, result)
    assert out.width == W and out.height > H  # a wide picture gets it below (a tall one to its right)
    px = _px(out)
    assert np.array_equal(_inside(px, big.box), _inside(_px(NOISE), big.box))
    margin = px[H + 5 :]
    assert (margin != 255).any() and (margin == 255).all(axis=-1).mean() > 0.5  # text on white


def test_the_legend_avoids_the_answer_box_and_the_other_boxes() -> None:
    plain = _px(overlay(IMAGE, _result(REGIONS), style="outline", legend=False))
    with_legend = _px(overlay(IMAGE, _result(REGIONS), style="outline"))
    changed = (plain != with_legend).any(axis=-1)
    ys, xs = np.nonzero(changed)
    assert len(ys) > 0, "no legend drawn"
    # one panel, where it hides least of the boxes: the bottom-left (the top corners hold r1 and r3)
    assert ys.min() > H / 2 and xs.max() < W / 2
    panel = with_legend[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].reshape(-1, 3)
    colours = {tuple(p) for p in panel}
    assert all(rank_colour(r.rank) in colours for r in REGIONS)  # the region lines' swatches


# ---------------------------------------------------------------------------------------------- boxes and styles


def test_rank_colours_are_distinct_and_rank_one_is_its_own() -> None:
    assert len(set(RANK_COLOURS)) == len(RANK_COLOURS)
    assert rank_colour(1) == RANK_COLOURS[0]
    assert rank_colour(1) not in {rank_colour(r) for r in range(2, 10)}
    assert rank_colour(7) == RANK_COLOURS[-1]


@pytest.mark.parametrize("style", ["heat", "outline"])
def test_boxes_are_drawn_in_their_rank_colour_just_outside_the_box(style: str) -> None:
    out = _px(overlay(IMAGE, _result(REGIONS), style=style, legend=False))  # type: ignore[arg-type]
    assert out.shape == (H, W, 3)
    for r in REGIONS:
        x0, y0, x1, y1 = r.box
        assert tuple(out[y1, (x0 + x1) // 2]) == rank_colour(r.rank), (r.id, style)  # below the bottom edge
        assert tuple(out[(y0 + y1) // 2, x0 - 1]) == rank_colour(r.rank), (r.id, style)  # left of the left edge


def test_outline_style_leaves_the_image_unchanged_outside_the_boxes() -> None:
    out = _px(overlay(IMAGE, _result(REGIONS), style="outline", legend=False))
    heat = _px(overlay(IMAGE, _result(REGIONS), style="heat", legend=False))
    far = (slice(450, 600), slice(0, 80))  # a patch away from every box (and its tag)
    assert (out[far] == 200).all()
    # the map's peak cell (row 1, col 1 of 4 x 4 over 800 x 600) lies in the answer box r1: never lit
    assert (heat[210, 290] == 200).all()
    # the map's low values darken the rest of the picture in heat style only
    assert (heat[far] != 200).any() and (out[210, 290] == 200).all()


def test_a_tiny_picture_gets_its_legend_in_a_margin_and_no_regions_is_said() -> None:
    tiny = Image.new("RGB", (40, 30), (200, 200, 200))
    result = _result([], with_map=False).model_copy(update={"image_wh": (40, 30)})
    out = overlay(tiny, result, style="outline")
    assert (_px(out)[:30, :40] == 200).all()  # no boxes: the image unchanged, the legend beside it
    assert out.height > 30
    assert "no regions" in legend_lines(_result([], with_map=False))


def test_unknown_style_and_a_wrong_image_are_refused() -> None:
    with pytest.raises(ValueError, match="style"):
        overlay(IMAGE, _result(REGIONS), style="glow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="800x600"):
        overlay(IMAGE.resize((600, 800)), _result(REGIONS))


# ---------------------------------------------------------------------------------------------- the real model


def test_an_overlay_of_the_embedded_model_reads_on_its_own() -> None:
    card = syn.Card(xyxy=(40.0, 40.0, 110.0, 110.0), color="blue", pip_color="white", n_pips=3)
    others = (
        syn.Card(xyxy=(700.0, 500.0, 770.0, 570.0), color="red", pip_color="black", n_pips=2),
        syn.Card(xyxy=(820.0, 120.0, 890.0, 190.0), color="yellow", pip_color="cyan", n_pips=4),
    )
    scene = syn.Scene(size_wh=(1024, 768), background=(128, 128, 128), cards=(card, *others), noise_seed=3)
    image = syn.render(scene)
    question = "What is the color of the dots on the blue card?"
    result = FocusPipeline.from_pretrained(None).zoom(
        image, question=question, options=["white", "black", "cyan", "pink"]
    )
    if result.answer_evidence is None:  # set by the pipeline once it reports the answer's confidence
        result = result.model_copy(update={"answer_evidence": EVIDENCE})
    lines = legend_lines(result)
    assert lines[0] == f"Q: {question}"
    assert lines[1].startswith(f"A: {result.answer}   confidence ")
    assert result.status is not None and any(t.startswith("status: answered on") for t in lines)
    assert "  blue card: " in "\n".join(lines)
    assert result.answer_boxes, "the embedded model should find the blue card"
    out = overlay(image, result)
    assert out.size == image.size
    for box in result.answer_boxes:
        assert np.array_equal(_inside(_px(out), box), _inside(_px(image), box))
    unscored = [r for r in result.regions if r.confidence is None and not r.selected]
    assert not set(drawn_regions(result)) & set(unscored)  # hidden by default
    shown = drawn_regions(result, show_unscored=True)
    assert {r.id for r in unscored if r.rank <= 5} <= {r.id for r in shown}
