"""Prompt texts shared by the pipeline, the baselines, the harness and the embedded model's training."""

from __future__ import annotations

LETTERS = "ABCDEFGH"


def format_options(question: str, options: list[str] | tuple[str, ...], suffix: str) -> str:
    """``question`` with lettered options on their own lines and the answer instruction, as in V*Bench's jsonl."""
    lines = [question.strip(), *(f"({LETTERS[i]}) {opt}" for i, opt in enumerate(options))]
    if suffix:
        lines.append(suffix)
    return "\n".join(lines)
