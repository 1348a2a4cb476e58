"""ZoomEye's prompts: the official templates (om-ai-lab/ZoomEye) and their per-checkpoint overrides."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Literal

from focus_tool.errors import ConfigError

# The official prompts (om-ai-lab/ZoomEye: ZoomEye/zoom_model*.py init_prompts, the cue template of
# ZoomEye/ic_examples/*.json, the decomposed question of ZoomEye/eval/perform_zoom_eye.py), verbatim except that the
# format fields are named: {target} is the visual cue, {question} the question (or the decomposed one). Every one can
# be overridden per checkpoint (ZoomEyePrompts).
EXISTENCE = "Is there a {target} in the image? Answer Yes or No."
LATENT = (
    "According to your common sense knowledge and the content of the image, is it possible to find a {target} in the "
    "image? Answer Yes or No and tell the reason."
)
ANSWERING = (  # the doubled "the" is in the original
    "Question: {question}\nCould you answer the question based on the the available visual information? Answer Yes "
    "or No."
)
# Global+Local input (ZoomModelGlobalLocal): the root alone ("global") and any other node as main image + zoomed view
LATENT_ROOT = (
    "According to your common sense knowledge and the content of image, is it possible to find a {target} by further "
    "zooming in the image? Answer Yes or No and tell the reason."
)
EXISTENCE_NODE = "Is there a {target} in the zoomed-in view? Answer Yes or No."
LATENT_NODE = (
    "According to your common sense knowledge and the content of the zoomed-in view, along with its location in the "
    "image, is it possible to find a {target} by further zooming in the current view? Answer Yes or No and tell the "
    "reason."
)
MAIN_CAPTION = "This is the main image, and the section enclosed by the {} rectangle is the focus region."
ZOOM_CAPTION = "This is the zoomed-in view of the focus region."
ConfidenceKind = Literal["existence", "latent", "answering"]
BOX_RGB: dict[str, tuple[int, int, int]] = {"red": (255, 0, 0), "blue": (0, 0, 255)}
DECOMPOSED = "What is the appearance of the {target}?"
CUE_PROMPT = "Question: {question}\nIf you want to answer the question, which objects' information do you need?"
CueSource = Literal["prompt", "focus_extraction"]
CUE_SOURCES: tuple[str, ...] = ("prompt", "focus_extraction")
_PRONOUNS = frozenset(
    [
        "it",
        "its",
        "they",
        "them",
        "this",
        "that",
        "these",
        "those",
        "he",
        "she",
        "him",
        "her",
        "i",
        "you",
        "we",
        "us",
        "me",
        "one",
    ]
)


InputMode = Literal["local", "global_local"]
# the format fields each prompt may use; at least one of them is required (a prompt without one asks the same thing
# of every cue / question)
PROMPT_FIELDS: dict[str, frozenset[str]] = {
    "cue": frozenset({"question"}),
    "decomposed": frozenset({"target"}),
    "existence": frozenset({"target"}),
    "latent": frozenset({"target"}),
    "answering": frozenset({"question", "target"}),
    "latent_root": frozenset({"target"}),
    "existence_node": frozenset({"target"}),
    "latent_node": frozenset({"target"}),
}


@dataclass(frozen=True, kw_only=True)
class ZoomEyePrompts:
    """Every prompt ZoomEye asks, as a template with named fields; the defaults are the official ones (upstream
    ``zoom_model*.py``, ``ic_examples/*.json``, ``eval/perform_zoom_eye.py``). ``{target}`` is the visual cue (for a
    type-2 cue "all cars": "car"), ``{question}`` the question asked.

    Which prompt a confidence uses: Local input: ``existence`` / ``latent`` / ``answering``. Global+Local input: the
    root (full image alone) ``existence`` / ``latent_root`` / ``answering``, any other node ``existence_node`` /
    ``latent_node`` / ``answering``. ``answering`` gets the question (or, with several cues, the ``decomposed``
    question about the cue) in ``{question}`` and the cue in ``{target}``. ``cue`` is the visual-cue extraction
    prompt (``ZoomEyeConfig.cues == "prompt"``). The two captions of the Global+Local view are statements, not
    questions, and stay fixed.

    Overriding them is a deviation from ZoomEye, for checkpoints that cannot read the official wording (a closed
    vocabulary): the search algorithm is unchanged, only what each confidence asks. See
    ``focus_tool/embedded/model/focus_preset.json`` and :func:`zoomeye_config_for`.
    """

    cue: str = CUE_PROMPT
    decomposed: str = DECOMPOSED
    existence: str = EXISTENCE
    latent: str = LATENT
    answering: str = ANSWERING
    latent_root: str = LATENT_ROOT
    existence_node: str = EXISTENCE_NODE
    latent_node: str = LATENT_NODE

    def __post_init__(self) -> None:
        for name, allowed in PROMPT_FIELDS.items():
            template = getattr(self, name)
            if not isinstance(template, str):
                raise ConfigError(f"ZoomEye prompt {name!r} must be a string, got {type(template).__name__}")
            used = _format_fields(name, template)
            if not used <= allowed or not used:
                raise ConfigError(
                    f"ZoomEye prompt {name!r} must use {' and/or '.join('{' + f + '}' for f in sorted(allowed))} "
                    f"and no other field, got {sorted(used) or 'none'} in {template!r}"
                )

    def confidence_template(self, kind: ConfidenceKind, where: Literal["local", "root", "node"]) -> str:
        """The template of a ``kind`` confidence for a Local node, the Global+Local root, or another Global+Local
        node.
        """
        if kind == "answering":
            return self.answering
        if where == "node":
            return self.existence_node if kind == "existence" else self.latent_node
        if kind == "existence":
            return self.existence
        return self.latent_root if where == "root" else self.latent


def _format_fields(name: str, template: str) -> set[str]:
    """The named fields of a ``str.format`` template; positional (``{}``, ``{0}``) or malformed ones are errors."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"ZoomEye prompt {name!r} is not a valid template ({e}): {template!r}") from None
    names = {f for _, f, _, _ in parsed if f is not None}
    bad = sorted(f for f in names if not f.isidentifier())
    if bad:
        raise ConfigError(
            f"ZoomEye prompt {name!r} must use named fields such as {{target}}, got {bad} in {template!r}"
        )
    return names
