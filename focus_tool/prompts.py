"""Prompt texts shared by the pipeline, the baselines, the harness and the embedded model's training."""

from __future__ import annotations

LETTERS = "ABCDEFGH"
# the answer instruction after lettered options [paper App. C.5; V*Bench's jsonl `text`, lmms-eval]
LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."
# Stage II (relevance prefill) and Stage V (existence confidence) of the paper
EXISTENCE_TEMPLATE = "Is there a {target} in the image?"


def existence_prompt(target: str) -> str:
    """The paper's existence question about ``target``: "Is there a {target} in the image?"."""
    return EXISTENCE_TEMPLATE.format(target=target)


def format_options(question: str, options: list[str] | tuple[str, ...], suffix: str) -> str:
    """``question`` with lettered options on their own lines and the answer instruction, as in V*Bench's jsonl."""
    lines = [question.strip(), *(f"({LETTERS[i]}) {opt}" for i, opt in enumerate(options))]
    if suffix:
        lines.append(suffix)
    return "\n".join(lines)
