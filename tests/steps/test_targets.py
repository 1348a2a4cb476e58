"""Stage I: parsing the model's "I need the info about ..." reply into targets (docs/method.md, Stage I)."""

from __future__ import annotations

import pytest

from focus_tool.config import TargetConfig
from focus_tool.errors import ConfigError
from focus_tool.steps.targets import DEFAULT_EXTRACT_PROMPT, Target, extraction_prompt, parse_targets

T = Target


@pytest.mark.parametrize(
    ("text", "question", "cfg", "expected"),
    [
        ("I need the info about red card.", "Where is the red card?", TargetConfig(), [T("red card")]),
        (
            "I need the info about red card and blue card.",
            "Is the red card left of the blue card?",
            TargetConfig(),
            [T("red card"), T("blue card")],
        ),  # two targets joined by "and"
        ("I need the info about all dogs.", "How many dogs are there?", TargetConfig(), [T("dog", True)]),  # type-2
        ("I need the info about all puppies.", "Count the puppies.", TargetConfig(), [T("puppy", True)]),  # ies -> y
        ("I need the info about all red cars.", "q", TargetConfig(), [T("red car", True)]),  # last word singularised
        ("I need the info about all bus.", "q", TargetConfig(), [T("bus", True)]),  # short word: no singularising
        ("I need the info about all glass.", "q", TargetConfig(), [T("glass", True)]),  # -ss kept
        ("I need the info about the car and a bus.", "q", TargetConfig(), [T("car"), T("bus")]),  # articles stripped
        ("I need the info about an apple.", "q", TargetConfig(), [T("apple")]),
        ("I need the info about it and the sign.", "q", TargetConfig(), [T("sign")]),  # pronoun dropped
        ("I need the info about them.", "q", TargetConfig(), []),  # only a pronoun: nothing
        ("I need the info about this, that and those.", "q", TargetConfig(), []),
        ("I need the info about car, the car and car.", "q", TargetConfig(), [T("car")]),  # duplicates removed
        (
            "I need the info about cup, plate and fork.",
            "q",
            TargetConfig(max_targets=2),
            [T("cup"), T("plate")],
        ),  # max_targets
        ("I need the info about cup; plate", "q", TargetConfig(), [T("cup"), T("plate")]),  # ";" separates
        ("I need the info about sandwich and candle.", "q", TargetConfig(), [T("sandwich"), T("candle")]),  # "and"
        # inside words is not a separator
        ("The answer is a car.", "What is it?", TargetConfig(), []),  # no "info about"
        ("", "What is it?", TargetConfig(), []),  # empty reply
        ("I need the INFO ABOUT Red Card.", "q", TargetConfig(), [T("red card")]),  # case-insensitive, lower-cased
        ("I need the info about car.\nQuestion: what about bus?", "q", TargetConfig(), [T("car")]),  # first line only
        ("info about dog. I need the info about cat.", "q", TargetConfig(), [T("cat")]),  # the last "info about"
        ("I need the info about 2.5 inch screw.", "q", TargetConfig(), [T("2.5 inch screw")]),  # decimal point kept
        ('I need the info about "red card".', "q", TargetConfig(), [T("red card")]),  # quotes stripped
        ("I need the info about   red    card  .", "q", TargetConfig(), [T("red card")]),  # whitespace collapsed
        ("I need the info about red card? Sure.", "q", TargetConfig(), [T("red card")]),  # "?" ends the list
        # the sentence ends at the first ". ": what follows is not a target
        ("I need the info about car. The car is red.", "q", TargetConfig(), [T("car")]),
        ("I need the info about car and bus. Then answer.", "q", TargetConfig(), [T("car"), T("bus")]),
    ],
)
def test_parse_targets(text: str, question: str, cfg: TargetConfig, expected: list[Target]) -> None:
    assert parse_targets(text, question, cfg) == expected


@pytest.mark.parametrize(
    ("text", "question", "type2_rule", "expected"),
    [
        ("info about dog.", "How many dogs are there?", "all_or_keyword", [T("dog", True)]),  # keyword -> type-2
        ("info about dog.", "How many dogs are there?", "all_only", [T("dog", False)]),  # keyword ignored
        ("info about cup.", "Count the cups on the table.", "all_or_keyword", [T("cup", True)]),
        ("info about cup.", "What is the number of cups?", "all_or_keyword", [T("cup", True)]),
        ("info about cup.", "HOW MANY cups?", "all_or_keyword", [T("cup", True)]),  # case-insensitive
        ("info about price.", "Is there a discount sign?", "all_or_keyword", [T("price", False)]),  # \bcount\b only
        ("info about cup.", "What colour is the cup?", "all_or_keyword", [T("cup", False)]),  # no keyword
        (
            "info about cup and plate.",
            "How many cups are next to the plate?",
            "all_or_keyword",
            [T("cup", False), T("plate", False)],
        ),  # the keyword rule applies to a single target only
        ("info about all dogs.", "Describe the dogs.", "all_only", [T("dog", True)]),  # "all" works under all_only
    ],
)
def test_counting_keyword_rule(text: str, question: str, type2_rule: str, expected: list[Target]) -> None:
    assert parse_targets(text, question, TargetConfig(type2_rule=type2_rule)) == expected  # type: ignore[arg-type]


def test_extraction_prompt() -> None:
    cfg = TargetConfig()
    assert cfg.extract_prompt == DEFAULT_EXTRACT_PROMPT
    p = extraction_prompt("  What is on the card?  ", cfg)
    assert p.endswith("Question: What is on the card?\nAnswer:")
    assert "{question}" not in p


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_targets": 0}, "max_targets"),
        ({"extract_prompt": "no placeholder here"}, r"\{question\}"),
    ],
)
def test_target_config_rejects(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TargetConfig(**kwargs)
