"""Expected, caller-fixable failures. Every message says what was wrong and how to fix it."""

from __future__ import annotations


class FocusError(Exception):
    """Base class of every error focus-tool raises on purpose."""


class InputRejected(FocusError):
    """The image, question or target given by the caller cannot be used."""


class ModelLoadError(FocusError):
    """The model path or checkpoint cannot be loaded."""


class ConfigError(FocusError, ValueError):
    """A setting is out of range."""


class TargetNotPlaced(InputRejected):
    """The tokenizer produced no token for the target phrase inside the prompt."""


def quote_text(text: object, limit: int = 80) -> str:
    """Quote caller text for a one-line error message.

    The text is quoted repr-style (newlines, tabs, control and other non-printable characters escaped, so a
    message never spans two lines nor carries a forged one) and cut to ``limit`` characters of the original
    with an ellipsis and the full length: ``'abc...' (100000 chars)``.
    """
    text = text if isinstance(text, str) else str(text)
    if len(text) <= limit:
        return repr(text)
    head = repr(text[: max(limit, 1)])
    return f"{head[:-1]}...{head[-1]} ({len(text)} chars)"
