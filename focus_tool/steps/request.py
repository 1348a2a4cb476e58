"""Before Stage I: the request's texts, checked once before any model call and put in the model's own spelling.

Every text must have words (:func:`focus_tool.inputs.check_text`); with a closed world (:mod:`focus_tool.world`) the
question must be one of its forms, the targets its objects and the options answers of the question's form; with an
open world no word of the question or targets may be unknown to the tokenizer (options are scored, not read: an
unknown word there only lowers a score). docs/method.md, Stage I, "What the model cannot know is refused".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from focus_tool.errors import InputRejected, quote_text
from focus_tool.inputs import InputPolicy, check_text
from focus_tool.world import OutsideWorld, QuestionForm, World


@dataclass(frozen=True)
class Request:
    """A question / target / options triple after :func:`admit`, in the model's spelling."""

    question: str | None
    targets: list[str] | None
    options: list[str] | None


def admit(
    question: object,
    target: object,
    options: object,
    *,
    policy: InputPolicy,
    world: World | None,
    unknown_words: Callable[[str], list[str]],
    min_options: int = 1,
) -> Request:
    """Check a request's texts; returns them in the model's spelling.

    Args:
        question: the question or None.
        target: a phrase, a list of phrases, or None.
        options: a list of option strings, or None.
        policy: the text limits.
        world: the model's closed world, or None (open world).
        unknown_words: the tokenizer's check (:meth:`MLLMAdapter.unknown_words`), used for an open world.
        min_options: the fewest options the answer scheme takes (2 for the logit scheme).

    Raises:
        InputRejected: a wrong type, an empty or wordless text, repeated or too few options.
        OutsideWorld: a text the model cannot know.
    """
    q = check_text(question, "question", policy) if question is not None else None
    phrases: list[str] | None = None
    if target is not None:
        if not isinstance(target, str | list | tuple) or not target:
            raise InputRejected(f"target must be a phrase or a non-empty list of phrases, got {quote_text(target)}")
        phrases = [check_text(t, "target", policy) for t in ([target] if isinstance(target, str) else target)]
    opts: list[str] | None = None
    if options is not None:
        if not isinstance(options, list | tuple):
            raise InputRejected(
                f"options must be a list of strings, e.g. ['white', 'black'], got {quote_text(options)}"
            )
        opts = [check_text(o, "option", policy) for o in options]
        if len(set(opts)) < len(opts):
            raise InputRejected(f"the options repeat one another: {quote_text(' | '.join(opts))}; give each once")
        if len(opts) < min_options:
            raise InputRejected(f"the answer scheme needs at least {min_options} options, got {len(opts)}; add more")
    if world is not None:
        form: QuestionForm | None = None
        if q is not None:
            q, form = world.check_question(q)
        phrases = [world.check_target(p) for p in phrases] if phrases is not None else None
        opts = world.check_options(opts, form) if opts is not None else None
        return Request(q, phrases, opts)
    unknown = [w for t in [q or "", *(phrases or [])] for w in unknown_words(t)]
    if unknown:
        raise OutsideWorld(
            f"the model's vocabulary has no word {', '.join(quote_text(w) for w in dict.fromkeys(unknown))}; "
            "rephrase with words it knows"
        )
    return Request(q, phrases, opts)
