"""The embedded model's closed world, declared from the synthetic world's own definitions (no second list).

:func:`declare` reads the card colours, the question forms the benchmark asks (:func:`focus_tool.data.synthetic.
question_text` per kind, and the existence question) and their answers from :mod:`focus_tool.data.synthetic`, the
module the training data is sampled from; training writes it next to the weights as ``focus_world.json``
(:data:`focus_tool.world.WORLD_FILE`), and a test checks the shipped file against it. The training-only form "Is the
{colour} card on the left or right side?" is left out: it is about the half of the view, so on a crop it would
answer about the crop, not the image.
"""

from __future__ import annotations

from pathlib import Path

from focus_tool.data import synthetic as syn
from focus_tool.world import WORLD_FILE, QuestionForm, World


def declare() -> World:
    """The embedded model's world: six card colours, dot colour / count, left / right, existence."""
    objects = tuple(f"{c} card" for c in syn.CARD_COLORS)
    forms = [QuestionForm(syn.question_text(k, ("{object}", "{object2}")), syn.ANSWERS[k]) for k in syn.KINDS]
    forms.append(QuestionForm(syn.existence_question("{object}"), syn.EXISTENCE_ANSWERS))

    def alternatives(words: tuple[str, ...] | list[str]) -> str:
        return ", ".join(words[:-1]) + " or " + words[-1]

    summary = (
        f"a toy model of a synthetic world: it sees only cards coloured {alternatives(list(syn.CARD_COLORS))}, each "
        f"with {syn.COUNT_WORDS[0]}-{syn.COUNT_WORDS[-1]} dots coloured {alternatives(list(syn.PIP_COLORS))}, and "
        "answers only about the dots' colour and count, whether one card is left or right of another, and whether a "
        "card is there."
    )
    return World(summary=summary, objects=objects, forms=tuple(forms))


def write(model_dir: Path) -> Path:
    """Write ``focus_world.json`` into a checkpoint folder; returns the file."""
    file = model_dir / WORLD_FILE
    file.write_text(declare().to_json(), encoding="utf-8")
    return file
