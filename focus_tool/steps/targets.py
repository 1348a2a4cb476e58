"""Stage I: name the target object(s) of a question with an in-context prompt (paper §3.2, §3.3).

The paper prints neither its prompt nor its examples; the template below is ours (docs/method.md, Stage I): a text-only,
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


_WORD = re.compile(r"[a-z0-9]+")
_NP_STOP = frozenset(
    [
        "of",
        "on",
        "in",
        "at",
        "to",
        "from",
        "with",
        "by",
        "for",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "how",
        "many",
        "much",
        "does",
        "do",
        "did",
        "there",
        "here",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "image",
        "picture",
        "photo",
        "the",
        "a",
        "an",
        "each",
        "every",
        "any",
        "some",
        "above",
        "below",
        "under",
        "over",
        "behind",
        "near",
        "next",
        "beside",
        "between",
        "inside",
        "outside",
    ]
)
_ATTRIBUTE_NOUNS = frozenset(
    [
        "color",
        "colour",
        "number",
        "count",
        "side",
        "left",
        "right",
        "shape",
        "size",
        "material",
        "kind",
        "type",
        "name",
        "position",
        "text",
    ]
)


def _words(text: str) -> list[str]:
    return [_singularise(w) for w in _WORD.findall(text.lower())]


def grounded(targets: list[Target], question: str) -> tuple[list[Target], list[Target]]:
    """Split ``targets`` into those whose every word occurs in ``question`` (singular and plural alike) and those
    that do not (a target the model invented, e.g. "purple card" for a question about a circle).
    """
    words = set(_words(question))
    kept = [t for t in targets if _words(t.phrase) and set(_words(t.phrase)) <= words]
    return kept, [t for t in targets if t not in kept]


def noun_phrases(question: str, cfg: TargetConfig) -> list[Target]:
    """Fallback targets read from the question itself: the word runs after an article or "of", up to the next
    function word or punctuation, attribute nouns ("color", "side", ...) dropped; a part named before its holder
    ("the dots on the red card") gives way to the holder. E.g. "What is the color of the dots on the red card?" ->
    red card; "Is the red card left of the blue card?" -> red card, blue card. A counting question makes its single
    phrase type-2.
    """
    out: list[Target] = []
    for clause in re.split(r"[?,.;:!()]", question.lower()):
        tokens = _WORD.findall(clause)
        last: tuple[int, str] | None = None  # end index and phrase of the previous kept run
        i = 0
        while i < len(tokens):
            if tokens[i] not in ("the", "a", "an", "of", "many"):
                i += 1
                continue
            j = i + 1
            while j < len(tokens) and tokens[j] not in _NP_STOP:
                j += 1
            run = tokens[i + 1 : j]
            phrase = " ".join(run)
            if run and run[-1] not in _ATTRIBUTE_NOUNS:
                between = [t for t in tokens[last[0] : i + 1] if t not in ("the", "a", "an")] if last else []
                if last is not None and between and set(between) <= {"on", "in", "of", "inside", "at"}:
                    out = [t for t in out if t.phrase != last[1]]  # a part of this holder: the holder is the target
                if phrase not in {t.phrase for t in out}:
                    out.append(Target(phrase))
                last = (j, phrase)
            i = j
    out = out[: cfg.max_targets]
    if len(out) == 1 and re.search(cfg.type2_regex, question.lower()) and cfg.type2_rule == "all_or_keyword":
        out = [Target(out[0].phrase, True)]
    return out
