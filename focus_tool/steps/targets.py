"""Stage I: name the target object(s) of a question with an in-context prompt (paper §3.2, §3.3).

The paper prints neither its prompt nor its examples; the template below is ours (spec Sec. 2): a text-only,
greedy call whose reply has the form "I need the info about car." Parsing is tolerant: text after the last
"info about", split on " and " / "," / ";", articles and trailing punctuation stripped, pronouns dropped.
An item starting with "all " marks a type-2 (all instances) target; so does a counting question (regex).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from focus_tool.config import TargetConfig

DEFAULT_EXTRACT_PROMPT = (
    "Extract the objects that must be looked at in the image to answer the question.\n"
    "Question: What is the color of the car?\n"
    "Answer: I need the info about car.\n"
    "Question: Is the red bicycle on the left or right side of the bus?\n"
    "Answer: I need the info about red bicycle and bus.\n"
    "Question: What is written on the sign above the door?\n"
    "Answer: I need the info about sign above the door.\n"
    "Question: What is the material of the glove? (A) rubber (B) cotton (C) kevlar (D) leather\n"
    "Answer: I need the info about glove.\n"
    "Question: How many dogs are in the image?\n"
    "Answer: I need the info about all dogs.\n"
    "Question: {question}\n"
    "Answer:"
)

_ARTICLES = ("the ", "a ", "an ")
_PRONOUNS = {"it", "them", "this", "that", "they", "these", "those"}


@dataclass(frozen=True)
class Target:
    """One object to look for. ``all_instances`` marks a type-2 (counting) target."""

    phrase: str
    all_instances: bool = False


def extraction_prompt(question: str, cfg: TargetConfig) -> str:
    """The text-only prompt that asks the model for the targets of ``question``."""
    return cfg.extract_prompt.replace("{question}", question.strip())


def _singularise(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def parse_targets(text: str, question: str, cfg: TargetConfig) -> list[Target]:
    """Parse the model's reply into targets; never raises, returns ``[]`` when nothing parses.

    Args:
        text: the generated reply, e.g. ``"I need the info about red card and blue card."``.
        question: the user question (for the counting-keyword rule).
        cfg: parsing settings.
    """
    low = text.lower()
    idx = low.rfind("info about")
    if idx < 0:
        return []
    body = text[idx + len("info about") :].split("\n")[0]
    body = re.split(r"\.(?!\w)|\?|!", body)[0]  # up to the sentence end
    items = [s.strip() for s in re.split(r"\s+and\s+|,|;", body)]
    out: list[Target] = []
    seen: set[str] = set()
    for raw in items:
        item = re.sub(r"\s+", " ", raw).strip(" .'\"`").lower()
        for art in _ARTICLES:
            if item.startswith(art):
                item = item[len(art) :]
        all_inst = False
        if item.startswith("all "):
            all_inst = True
            words = item[4:].split(" ")
            words[-1] = _singularise(words[-1])
            item = " ".join(words)
        if not item or item in _PRONOUNS or item in seen:
            continue
        seen.add(item)
        out.append(Target(item, all_inst))
        if len(out) >= cfg.max_targets:
            break
    if cfg.type2_rule == "all_or_keyword" and len(out) == 1 and re.search(cfg.type2_regex, question.lower()):
        out = [Target(out[0].phrase, True)]
    return out
