"""What a model can be asked about: a closed world a checkpoint folder may declare in ``focus_world.json``.

A real MLLM is open-world: any question is its to answer (or to get wrong), and the only text check is the
tokenizer's (:meth:`MLLMAdapter.unknown_words`). A model trained on a closed world, such as the embedded model
(``focus_tool/embedded/model``), can only ground the objects and answer the question forms its training data holds;
asked about a car, it would still answer, with a confidence that means nothing. Such a checkpoint ships a
``focus_world.json`` (written from the training data's own definitions: :func:`focus_tool.embedded.world.declare`)
and every question, target and option is checked against it before any model call:

- a question must be one of the declared forms with declared objects in its slots (case and spacing free, the
  final ``?`` optional); it is rewritten to the form's own spelling, because the model's tokenizer is case-sensitive;
- a target must be a declared object (an article in front is dropped);
- options must be answers of the question's form.

Anything else is refused with one :class:`OutsideWorld` line that says what the model can answer instead. Every
surface reports it the way it reports bad input (Python: the exception; CLI: exit 2; LangChain: ToolException;
MCP: ``is_error``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from focus_tool.errors import InputRejected, quote_text

WORLD_FILE = "focus_world.json"
_SLOTS = ("{object}", "{object2}")
_WORD = re.compile(r"[^\W_]+")


class OutsideWorld(InputRejected):
    """The question, target or options lie outside what the loaded model was trained on."""


@dataclass(frozen=True)
class QuestionForm:
    """One question form: a template with ``{object}`` (and ``{object2}``) slots, and the answers it takes."""

    template: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class World:
    """A closed world: the objects a model can find and the question forms it can answer.

    Attributes:
        summary: one sentence on what the model can see, shown in refusals, ``focus models`` and tool descriptions.
        objects: the object phrases it can find, e.g. ``"red card"``.
        forms: the question forms it can answer.
    """

    summary: str
    objects: tuple[str, ...]
    forms: tuple[QuestionForm, ...]

    @property
    def words(self) -> frozenset[str]:
        """Every word (lower case) a question, target or option in this world may use."""
        texts = [*self.objects, *(f.template for f in self.forms), *(a for f in self.forms for a in f.answers)]
        return frozenset(w.lower() for t in texts for w in _WORD.findall(t) if f"{{{w}}}" not in _SLOTS)

    def example(self) -> str:
        """The first form filled with the first objects: a question the model can answer."""
        return self._fill(self.forms[0].template, self.objects[0], self.objects[min(1, len(self.objects) - 1)])

    def _fill(self, template: str, first: str, second: str) -> str:
        return template.replace("{object}", first).replace("{object2}", second)

    def _refuse(self, what: str, text: str) -> OutsideWorld:
        outside = [w for w in dict.fromkeys(_WORD.findall(text)) if w.lower() not in self.words]
        named = f" ({', '.join(repr(w) for w in outside[:3])} {'is' if len(outside) == 1 else 'are'} not in it)"
        second = self.objects[min(1, len(self.objects) - 1)]
        forms = "; ".join(repr(self._fill(f.template, self.objects[0], second)) for f in self.forms)
        return OutsideWorld(
            f"the {what} {quote_text(text)} is outside what this model knows{named if outside else ''}: "
            f"{self.summary} Ask one of: {forms}"
        )

    def check_question(self, question: str) -> tuple[str, QuestionForm]:
        """The question in its form's spelling, and the form; raises :class:`OutsideWorld` if it matches none."""
        norm = " ".join(question.split()).rstrip("?").strip().lower()
        objects = "|".join(re.escape(o.lower()) for o in sorted(self.objects, key=len, reverse=True))
        for form in self.forms:
            pattern = re.escape(form.template.rstrip("?").lower())
            for slot in _SLOTS:
                pattern = pattern.replace(re.escape(slot), f"(?P<{slot[1:-1]}>{objects})")
            m = re.fullmatch(pattern, norm)
            if m:
                found = [self._object(m.group(s[1:-1])) for s in _SLOTS if f"(?P<{s[1:-1]}>" in pattern]
                return self._fill(form.template, found[0], found[-1]), form
        raise self._refuse("question", question)

    def _object(self, lower: str) -> str:
        return next(o for o in self.objects if o.lower() == lower)

    def check_target(self, target: str) -> str:
        """The declared object ``target`` names (an article dropped); raises :class:`OutsideWorld` otherwise."""
        norm = " ".join(target.split()).lower()
        for article in ("the ", "a ", "an "):
            norm = norm.removeprefix(article)
        for o in self.objects:
            if o.lower() == norm:
                return o
        raise self._refuse("target", target)

    def check_options(self, options: Sequence[str], form: QuestionForm | None) -> list[str]:
        """The options in the world's spelling; raises :class:`OutsideWorld` unless each answers ``form``.

        Without a form (a target search with options) any declared answer is accepted.
        """
        allowed = form.answers if form is not None else tuple(a for f in self.forms for a in f.answers)
        by_lower = {a.lower(): a for a in allowed}
        out = []
        for o in options:
            key = " ".join(o.split()).lower()
            if key not in by_lower:
                what = f"the answers to {form.template!r}" if form else "any answer"
                raise OutsideWorld(
                    f"the option {quote_text(o)} is outside what this model can answer ({what}: "
                    f"{', '.join(allowed)}); {self.summary}"
                )
            out.append(by_lower[key])
        return out

    def to_json(self) -> str:
        """The ``focus_world.json`` text."""
        spec = {
            "summary": self.summary,
            "objects": list(self.objects),
            "forms": [{"template": f.template, "answers": list(f.answers)} for f in self.forms],
        }
        return json.dumps(spec, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = WORLD_FILE) -> World:
        """Parse ``focus_world.json``; raises ValueError naming ``source`` if malformed."""
        try:
            spec = json.loads(text)
            forms = tuple(QuestionForm(str(f["template"]), tuple(map(str, f["answers"]))) for f in spec["forms"])
            world = cls(str(spec["summary"]), tuple(map(str, spec["objects"])), forms)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{source} is not a valid world declaration ({e})") from None
        if not world.objects or not world.forms:
            raise ValueError(f"{source} declares no objects or no question forms")
        return world


def describe(world: World | None, model_id: str, subject: str = "The loaded model") -> str:
    """One sentence on what the loaded model can see (``focus models``, tool descriptions, ``focus_allowed_roots``)."""
    if world is not None:
        return f"{subject} is {world.summary}"
    return (
        f"{subject} ({model_id}) is an open-world multimodal LLM: any question about the image is its to "
        "answer, so check the status and the answer's confidence before trusting it."
    )


def read_world(model_dir: str | Path) -> World | None:
    """The world a checkpoint folder declares, or None (an open-world model, or a hub id)."""
    file = Path(model_dir) / WORLD_FILE
    if not file.is_file():
        return None
    return World.from_json(file.read_text(encoding="utf-8"), str(file))
