"""Answers carry their evidence: option probabilities from the scores the answer was chosen by, a free answer's
mean token log-probability, and a low_confidence warning under the preset's threshold (embedded model)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from focus_tool.data import synthetic as syn
from focus_tool.eval.reliability import choose_low_confidence, expected_calibration_error, reliability_table
from focus_tool.pipeline import FocusPipeline
from focus_tool.steps.answer import crop


@pytest.fixture(scope="module")
def pipe() -> FocusPipeline:
    return FocusPipeline.from_pretrained(None)


@pytest.fixture(scope="module")
def items() -> list[syn.BenchItem]:
    return syn.benchmark_items(0, 6)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_option_probabilities_are_the_logit_scheme_scores(pipe: FocusPipeline, items: list[syn.BenchItem]) -> None:
    for item in items:
        image, q = syn.render(item.scene), item.question
        options = list(q.options)
        result = pipe.zoom(image, question=q.text, options=options)
        ev = result.answer_evidence
        assert ev is not None and ev.kind == "options" and list(ev.options) == options
        assert abs(sum(ev.options.values()) - 1) <= 1e-4
        assert result.answer == max(ev.options, key=ev.options.__getitem__)
        assert ev.confidence == ev.options[result.answer] and ev.low == (ev.confidence < ev.threshold)
        view = crop(image, np.asarray(result.answer_boxes[0], dtype=np.float64)) if result.answer_boxes else image
        if result.answer_view in ("crop", "full"):  # the scores the scheme ranked the options by, recomputed
            scores = pipe.adapter.option_log_likelihoods([view], q.text, options, shared_prefix=True).double().numpy()
            assert np.allclose(list(ev.options.values()), _softmax(scores), atol=1e-5)
            assert options[int(np.argmax(scores))] == result.answer


def test_vanilla_answers_carry_option_probabilities_too(pipe: FocusPipeline, items: list[syn.BenchItem]) -> None:
    item = items[0]
    result = pipe.vanilla(syn.render(item.scene), question=item.question.text, options=list(item.question.options))
    assert result.answer_evidence is not None and abs(sum(result.answer_evidence.options.values()) - 1) <= 1e-4


def test_a_free_answer_carries_its_mean_token_log_probability(pipe: FocusPipeline, items: list[syn.BenchItem]) -> None:
    item = items[0]
    image = syn.render(item.scene)
    result = pipe.zoom(image, question=item.question.text)
    ev = result.answer_evidence
    assert ev is not None and ev.kind == "free" and ev.options == {} and ev.mean_logprob is not None
    assert ev.confidence == pytest.approx(np.exp(ev.mean_logprob), abs=1e-5)
    view = crop(image, np.asarray(result.answer_boxes[0], dtype=np.float64))
    teacher_forced = pipe.adapter.option_log_likelihoods([view], item.question.text, [str(result.answer)])
    assert ev.mean_logprob == pytest.approx(float(teacher_forced[0]), abs=1e-4)


def test_a_low_confidence_answer_is_flagged(pipe: FocusPipeline, items: list[syn.BenchItem]) -> None:
    item = items[0]
    strict = FocusPipeline(
        pipe.adapter,
        dataclasses.replace(pipe.config, answer=dataclasses.replace(pipe.config.answer, low_confidence=1.0)),
    )
    result = strict.zoom(syn.render(item.scene), question=item.question.text, options=list(item.question.options))
    assert result.answer_evidence is not None and result.answer_evidence.low
    assert result.status is not None and "low_confidence" in {w.code for w in result.status.warnings}
    assert pipe.config.answer.low_confidence == 0.728  # the embedded preset's, chosen on the validation stream


def test_reliability_table_and_threshold_choice() -> None:
    conf = [0.2, 0.3, 0.4, 0.45, 0.6, 0.8, 0.95, 0.99, 1.0, 1.0]
    ok = [False, False, True, False, True, True, True, True, True, True]
    table = reliability_table(conf, ok)
    assert [r["n"] for r in table] == [4, 1, 1, 1, 3]
    assert table[0]["accuracy"] == 25.0 and table[-1]["bin"] == "[0.99, 1]"
    assert 0 <= expected_calibration_error(table) <= 1
    choice = choose_low_confidence(conf, ok, min_below=3)
    assert choice["threshold"] == 0.95 and choice["n_below"] == 6 and choice["accuracy_below"] == 50.0
    strict = choose_low_confidence(conf, ok, min_below=3, max_accuracy=0.3)
    assert strict["threshold"] == 0.6 and strict["n_below"] == 4 and strict["accuracy_below"] == 25.0
    assert choose_low_confidence(conf, ok, min_below=11)["threshold"] == 0.0  # never enough answers below


def test_letter_scheme_options_carry_the_letters_probabilities(pipe: FocusPipeline, items: list[syn.BenchItem]) -> None:
    """Options shown as (A) (B) ...: each option's probability is its letter's at the first reply position."""
    cfg = dataclasses.replace(pipe.config, answer=dataclasses.replace(pipe.config.answer, scheme="letter"))
    letter = FocusPipeline(pipe.adapter, cfg)
    item = items[1]
    image, options = syn.render(item.scene), list(item.question.options)
    result = letter.zoom(image, question=item.question.text, options=options)
    ev = result.answer_evidence
    assert ev is not None and ev.kind == "options" and list(ev.options) == options and ev.mean_logprob is not None
    assert abs(sum(ev.options.values()) - 1) <= 1e-4
    view = crop(image, np.asarray(result.answer_boxes[0], dtype=np.float64))
    prompt = letter._answer_text(item.question.text, options)  # the lettered prompt the reply was generated after
    letters = pipe.adapter.option_log_likelihoods([view], prompt, ["A", "B", "C", "D"][: len(options)])
    assert np.allclose(list(ev.options.values()), _softmax(letters.double().numpy()), atol=1e-4)
