"""FocusPipeline end to end on a tiny random LLaVA: validity and pass accounting (docs/method.md, Forward passes)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.config import AnswerConfig, FocusConfig, ProposalConfig, RankConfig
from focus_tool.pipeline import FocusPipeline
from focus_tool.result import FocusResult
from tests.tiny_models import tiny_llava

QUESTION = "What is the color of the dots on the red card?"


@pytest.fixture(scope="module")
def adapter() -> LlavaAdapter:
    model, processor = tiny_llava(seed=1)
    return LlavaAdapter(model, processor, model_id="tiny")


def _image(wh: tuple[int, int] = (400, 260)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((wh[1], wh[0], 3)) * 255).astype("uint8"))


def _cfg(n_steps: int, overrun: bool) -> FocusConfig:
    # 4 x 4 grid: 1-cell boxes, anchors 1 cell apart -> up to 16 proposals, plenty for n_steps <= 4
    return FocusConfig(
        proposal=ProposalConfig(k=16, s_min=1, s_max=1, s_dist=1.0, nms_iou=0.3),
        rank=RankConfig(n_steps=n_steps, overrun=overrun),
        answer=AnswerConfig(on_not_found="best_region"),  # random weights: P(Yes) ~ 0.5 says nothing
    )


@pytest.mark.parametrize("wh", [(400, 260), (260, 400), (300, 300), (1200, 200)])
def test_zoom_returns_valid_result_with_boxes_inside(adapter: LlavaAdapter, wh: tuple[int, int]) -> None:
    pipe = FocusPipeline(adapter, _cfg(2, overrun=False))
    result = pipe.zoom(_image(wh), question=QUESTION, target="red card")
    assert FocusResult.model_validate_json(result.model_dump_json()) == result
    assert result.image_wh == wh
    assert result.regions and result.answer is not None
    for r in result.regions:
        x0, y0, x1, y1 = r.box
        assert 0 <= x0 < x1 <= wh[0] and 0 <= y0 < y1 <= wh[1]
    assert sum(r.selected for r in result.regions) == 1
    m = result.relevance_maps[0]
    assert np.isclose(np.sum(m.values), 1.0, atol=1e-4)


@pytest.mark.parametrize(
    ("n_steps", "overrun", "targets", "expected_search"),
    [
        (1, False, ["red card"], 1),  # Steps-1 no-overrun = T prefills, no existence pass
        (1, False, ["red card", "blue card"], 2),
        (2, False, ["red card"], 3),  # T * (1 + n)
        (4, False, ["red card", "blue card"], 10),
    ],
)
def test_forward_pass_accounting(
    adapter: LlavaAdapter, n_steps: int, overrun: bool, targets: list[str], expected_search: int
) -> None:
    pipe = FocusPipeline(adapter, _cfg(n_steps, overrun))
    result = pipe.zoom(_image(), question=QUESTION, target=targets)
    assert result.forward_passes.search == expected_search
    assert result.forward_passes.answer == 1
    assert result.forward_passes.extraction == 0  # explicit targets skip extraction


def test_overrun_never_stops_before_n_steps(adapter: LlavaAdapter) -> None:
    pipe = FocusPipeline(adapter, _cfg(3, overrun=True))
    result = pipe.zoom(_image(), target="red card")
    scored = [r for r in result.regions if r.confidence is not None]
    assert len(scored) >= 3
    assert result.forward_passes.search == 1 + len(scored)
    best = max(scored, key=lambda r: r.confidence or 0)
    assert best.selected
    if len(scored) > 3:  # overrun: it stops at the first Yes, or scores every proposal if none says Yes
        n_yes = sum((r.confidence or 0) > 0.5 for r in scored)
        assert n_yes == 1 or (n_yes == 0 and len(scored) == len(result.regions))


def test_question_without_target_runs_extraction(adapter: LlavaAdapter) -> None:
    pipe = FocusPipeline(adapter, _cfg(2, overrun=False))
    result = pipe.zoom(_image(), question=QUESTION)
    assert result.forward_passes.extraction == 1
    if not result.targets:  # a random model names no parsable target: answered on the full image
        assert result.answer_view == "full" and result.forward_passes.search == 0


def test_random_map_ablation_changes_the_map(adapter: LlavaAdapter) -> None:
    cfg = _cfg(1, overrun=False)
    rnd = dataclasses.replace(cfg, relevance=dataclasses.replace(cfg.relevance, map_source="random"))
    a = FocusPipeline(adapter, cfg).zoom(_image(), target="red card").relevance_maps[0].values
    b = FocusPipeline(adapter, rnd).zoom(_image(), target="red card").relevance_maps[0].values
    assert not np.allclose(a, b)


def test_vanilla_uses_one_answer_pass(adapter: LlavaAdapter) -> None:
    result = FocusPipeline(adapter).vanilla(_image(), question=QUESTION, options=["white", "black"])
    assert result.method == "vanilla"
    assert (result.forward_passes.search, result.forward_passes.answer) == (0, 1)


def test_llava_answers_on_one_image(adapter: LlavaAdapter) -> None:
    """LLaVA-1.5 is a global-view model: one crop / union / canvas through generate, no interleaved prompt."""
    assert adapter.answer_mode == "single"
    with pytest.raises(NotImplementedError, match="LlavaAdapter"):
        adapter.generate_interleaved([_image(), "hi"], max_new_tokens=1)
    result = FocusPipeline(adapter, _cfg(2, overrun=False)).zoom(_image(), question=QUESTION, target="red card")
    assert result.answer_view == "crop" and len(result.answer_boxes) == 1
    assert result.forward_passes.answer == 1


def _logit_cfg() -> FocusConfig:
    cfg = _cfg(2, overrun=False)
    return dataclasses.replace(cfg, answer=dataclasses.replace(cfg.answer, scheme="logit"))


def test_logit_scheme_answers_with_the_best_option_one_pass_each(adapter: LlavaAdapter) -> None:
    pipe = FocusPipeline(adapter, _logit_cfg())
    options = ["black", "white", "cyan"]
    result = pipe.zoom(_image(), question=QUESTION, target="red card", options=options)
    assert result.forward_passes.answer == len(options)  # no generate call, one pass per option
    box = result.answer_boxes[0]
    scores = adapter.option_log_likelihoods([_image().crop(box)], QUESTION, options)
    assert result.answer == options[int(scores.argmax())]


def test_logit_scheme_vanilla_matches_manual_scores(adapter: LlavaAdapter) -> None:
    pipe = FocusPipeline(adapter, _logit_cfg())
    options = ["1", "2", "3", "4"]
    van = pipe.vanilla(_image(), question=QUESTION, options=options)
    scores = adapter.option_log_likelihoods([_image()], QUESTION, options)
    assert van.answer == options[int(scores.argmax())]
    assert van.forward_passes.answer == 4


def test_answer_false_stops_before_stage_six(adapter: LlavaAdapter) -> None:
    pipe = FocusPipeline(adapter, _cfg(2, overrun=False))
    full = pipe.zoom(_image(), question=QUESTION, target="red card")
    search_only = pipe.zoom(_image(), question=QUESTION, target="red card", answer=False)
    assert search_only.answer is None and search_only.forward_passes.answer == 0
    assert search_only.question == QUESTION
    assert search_only.answer_view == full.answer_view and search_only.answer_boxes == full.answer_boxes
    assert search_only.forward_passes.search == full.forward_passes.search


def test_progress_reports_every_step_in_order(adapter: LlavaAdapter) -> None:
    pipe = FocusPipeline(adapter, _cfg(2, overrun=False))
    seen: list[tuple[str, float]] = []
    pipe.zoom(_image(), question=QUESTION, target=["red card", "blue card"], progress=lambda m, f: seen.append((m, f)))
    assert [m for m, _ in seen] == ["targets", "search red card", "search blue card", "answer", "done"]
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0


def test_logit_scheme_needs_two_options(adapter: LlavaAdapter) -> None:
    from focus_tool.errors import InputRejected

    with pytest.raises(InputRejected, match="needs at least 2 options, got 1"):
        FocusPipeline(adapter, _logit_cfg()).zoom(_image(), question=QUESTION, target="red card", options=["x"])
