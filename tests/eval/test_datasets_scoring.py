"""Loaders on the schema-faithful fixtures and the scoring pitfalls of docs/evaluation.md: V*'s stored-first options,
HR-Bench's per-cycle averaging, MME-RealWorld's extractor."""

from __future__ import annotations

from pathlib import Path

import pytest

from focus_tool.eval.benchmarks import accuracy_breakdown
from focus_tool.eval.datasets import (
    DatasetError,
    load_hrbench,
    load_mme_realworld,
    load_vstar,
    parse_lettered_text,
)
from focus_tool.eval.records import Scored
from focus_tool.eval.scoring import extract_lenient, extract_mme, extract_strict, predicted_letter

FIX = Path(__file__).resolve().parent.parent / "fixtures"


def test_vstar_per_image_stored_order_first_correct() -> None:
    items = load_vstar(FIX / "vstar")
    assert [(it.item_id, len(it.options), it.answer_index) for it in items] == [
        ("direct_attributes/sa_1", 4, 0),
        ("relative_position/sa_2", 2, 0),
    ]
    assert items[0].load_image().size == (64, 48)


def test_vstar_letter_run_shuffles_so_always_a_is_not_perfect() -> None:
    """V* option-order pitfall: with letters, per-image options must not stay in stored order."""
    items = load_vstar(FIX / "vstar", shuffle_seed=0)
    assert {it.answer_letter for it in items} != {"A"}
    records = [
        Scored(correct=predicted_letter("A", it.options, "letter-lenient") == it.answer_letter, category=it.category)
        for it in items
    ]
    assert accuracy_breakdown(records, "vstar")["accuracy"] < 1.0
    again = load_vstar(FIX / "vstar", shuffle_seed=0)
    assert [it.options for it in again] == [it.options for it in items]  # deterministic


def test_vstar_jsonl_labels_and_text() -> None:
    items = load_vstar(FIX / "vstar" / "test_questions.jsonl")
    assert [it.answer_letter for it in items] == ["C", "B"]
    assert items[0].options == ("black", "cyan", "white", "pink") and items[0].question.endswith("red card?")
    assert items[1].image_path == FIX / "vstar" / "relative_position" / "sa_2.jpg"


def test_parse_lettered_text_keeps_instruction_out() -> None:
    q, opts, tail = parse_lettered_text("Q?\n(A) x\n(B) y\nAnswer with the option's letter.")
    assert (q, opts, tail) == ("Q?", ["x", "y"], "Answer with the option's letter.")


def test_hrbench_cyclic_rows_and_fractional_score() -> None:
    items = load_hrbench(FIX / "hrbench" / "hr_bench_4k.tsv")
    assert len(items) == 8 and {it.extra["cycle_category"] for it in items} == {f"cyc{k}" for k in range(4)}
    for it in items:  # the answer letter follows the correct option through the rotation
        assert it.options[it.answer_index] in ("red", "the red one")
    assert items[0].load_image().size == (64, 48)
    # a model always answering "A" is right only in the cycle where the correct option is first
    records = [Scored(correct=it.answer_letter == "A", category=it.category, extra=it.extra) for it in items]
    acc = accuracy_breakdown(records, "hrbench4k")
    assert acc["per_cycle"] == {"cyc0": 1.0, "cyc1": 0.0, "cyc2": 0.0, "cyc3": 0.0}
    assert acc["accuracy"] == pytest.approx(0.25) and acc["per_category"] == {"cross": 0.25, "single": 0.25}


def test_hrbench_cyclic_average_is_over_groups() -> None:
    """Unequal groups: cycle means (1.0, 0.0) average to 0.5 although 2 of 3 rows are right."""
    recs = [
        Scored(correct=True, category="single", extra={"cycle_category": "a"}),
        Scored(correct=True, category="single", extra={"cycle_category": "a"}),
        Scored(correct=False, category="single", extra={"cycle_category": "b"}),
    ]
    assert accuracy_breakdown(recs, "hrbench8k")["accuracy"] == pytest.approx(0.5)


def test_hrbench_per_category_divides_by_all_groups_as_the_official_scorer() -> None:
    """report_acc_hrbench: per type, the sum of its per-group accuracies over the groups where it occurs, divided by
    the number of groups. "cross" occurs only in group a (1.0): 1.0 / 2 groups = 0.5."""
    recs = [
        Scored(correct=True, category="single", extra={"cycle_category": "a"}),
        Scored(correct=False, category="single", extra={"cycle_category": "b"}),
        Scored(correct=True, category="cross", extra={"cycle_category": "a"}),
    ]
    acc = accuracy_breakdown(recs, "hrbench4k")
    assert acc["per_cycle"] == {"a": 1.0, "b": 0.0} and acc["accuracy"] == pytest.approx(0.5)
    assert acc["per_category"] == {"cross": 0.5, "single": 0.5}


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "hr_bench_4k.parquet"
    f.write_bytes(b"PAR1")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(DatasetError, match="needs pyarrow"):
            load_hrbench(f)


def test_missing_path_is_clear() -> None:
    with pytest.raises(DatasetError, match="local path only"):
        load_vstar(Path("/nonexistent/vstar"))


def test_mme_json_and_tsv() -> None:
    items = load_mme_realworld(FIX / "mme" / "mme_rw_lite.json")
    assert [it.answer_letter for it in items] == ["B", "E", "A"]
    assert [it.extra["task"] for it in items] == ["Perception", "Perception", "Reasoning"]
    assert items[1].options[4] == "None of the above" and len(items[0].options) == 5
    tsv = load_mme_realworld(FIX / "mme" / "mme_realworld_lite.tsv")
    assert [(it.answer_letter, it.extra["task"]) for it in tsv] == [("B", "Perception"), ("E", "Perception")]
    assert tsv[0].options == items[0].options and tsv[0].load_image().size == (64, 48)


CHOICES = ["(A) STOP", "(B) EXIT", "(C) OPEN", "(D) SALE", "(E) The sign is not visible"]


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("The best answer is (B)", "B"),  # prefixed
        ("E", "E"),  # the E option
        ("the text on it cannot be read from this far away at all sorry", ""),  # > 10 words, no A-E: empty
        ("exit", "B"),  # matched only by option-text substring
        ("", ""),
    ],
)
def test_mme_regex_branches(reply: str, letter: str) -> None:
    assert extract_mme(reply, CHOICES) == letter


def test_mme_split_and_weighted_overall() -> None:
    recs = [
        Scored(correct=True, category="OCR", extra={"task": "Perception", "subtask": "s1"}),
        Scored(correct=True, category="RS", extra={"task": "Perception", "subtask": "s2"}),
        Scored(correct=False, category="AD", extra={"task": "Reasoning", "subtask": "s3"}),
    ]
    acc = accuracy_breakdown(recs, "mme-rw-lite")
    assert acc["per_task"] == {"Perception": 1.0, "Reasoning": 0.0}
    assert acc["accuracy"] == pytest.approx(2 / 3)  # weighted by count, not the mean of the two tasks


@pytest.mark.parametrize(
    ("reply", "strict", "lenient", "first"),
    [
        ("A", "A", "A", "A"),
        ("B.", "B", "B", "B"),
        ("(C)", "C", "C", ""),
        (" D because", "", "D", "D"),  # the synthetic letter scheme reads the first character only
        ("The answer is A", "", "A", ""),
        ("The answer is (D) because the dots look pink in the zoomed view of the card", "", "D", ""),
        ("E", "", "", ""),  # not an option of a 4-option question
        ("cyan", "", "", ""),
    ],
)
def test_letter_extractors(reply: str, strict: str, lenient: str, first: str) -> None:
    assert extract_strict(reply, 4) == strict
    assert extract_lenient(reply, 4) == lenient
    assert predicted_letter(reply, ("w", "x", "y", "z"), "letter-first") == first


def test_logit_scheme_maps_option_text() -> None:
    assert predicted_letter("white", ("black", "white"), "logit") == "B"
    assert predicted_letter("green", ("black", "white"), "logit") == ""
