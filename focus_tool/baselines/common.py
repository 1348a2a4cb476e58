"""What every engine of the harness shares: the answer schemes and the common ``run`` signature."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from PIL import Image

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.prompts import format_options
from focus_tool.result import FocusResult

AnswerScheme = Literal["letter", "logit"]
"""``letter``: options shown as (A) (B) ... with the benchmark's instruction, the model generates (a letter is
expected); ``logit``: order-free logit matching, the option sentence with the highest mean log-probability as the
assistant reply is the choice (SEAL / ZoomEye on V*), ``FocusResult.answer`` is then that option's text."""


class Method(Protocol):
    """An engine the evaluation runner can drive."""

    name: str
    adapter: MLLMAdapter

    def run(
        self,
        image: Image.Image,
        *,
        question: str,
        options: Sequence[str] | None,
        scheme: AnswerScheme = "letter",
        suffix: str = "",
    ) -> FocusResult:
        """Answer ``question`` about ``image``; the result carries forward-pass counts per phase."""
        ...


def answer_text(question: str, options: Sequence[str] | None, suffix: str) -> str:
    """The letter-scheme prompt: question, ``(A) ...`` lines, instruction (or the bare question)."""
    return format_options(question, list(options), suffix) if options else question


def answer_on(
    adapter: MLLMAdapter,
    images: Sequence[Image.Image],
    *,
    question: str,
    options: Sequence[str] | None,
    scheme: AnswerScheme,
    suffix: str,
    max_new_tokens: int,
    shared_prefix: bool = False,
) -> str:
    """Answer on ``images`` (one prompt) under ``scheme``; passes are counted in the "answer" phase.

    ``shared_prefix``: logit scheme on one prefill (:meth:`MLLMAdapter.option_log_likelihoods`).
    """
    with adapter.counter.in_phase("answer"):
        if scheme == "logit":
            if not options:
                raise ValueError("the logit answer scheme needs options")
            scores = adapter.option_log_likelihoods(images, question, options, shared_prefix=shared_prefix)  # (K,)
            return options[int(scores.argmax())]
        return adapter.generate_images(images, answer_text(question, options, suffix), max_new_tokens=max_new_tokens)


def answer_on_parts(
    adapter: MLLMAdapter,
    parts: Sequence[Image.Image | str],
    *,
    question: str,
    options: Sequence[str] | None,
    scheme: AnswerScheme,
    suffix: str,
    max_new_tokens: int,
) -> str:
    """Answer after ``parts`` (images and caption lines, in order) in one user turn; passes counted as "answer".

    Letter: the letter-scheme prompt is the last line, one generate. Logit: the bare question is the last line and
    each option is scored as the reply (one pass per option).
    """
    with adapter.counter.in_phase("answer"):
        if scheme == "logit":
            if not options:
                raise ValueError("the logit answer scheme needs options")
            scores = adapter.option_log_likelihoods_interleaved([*parts, question], options)  # (K,)
            return options[int(scores.argmax())]
        text = answer_text(question, options, suffix)
        return adapter.generate_interleaved([*parts, text], max_new_tokens=max_new_tokens)
