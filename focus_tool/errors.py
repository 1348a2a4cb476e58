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
