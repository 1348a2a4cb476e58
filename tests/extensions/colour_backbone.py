"""A new backbone added through the documented extension points alone (docs/extending.md, "A backbone").

``ColourAdapter`` is a stand-in MLLM with no weights: its "cached values" are the mean colours of an 8 x 8 grid of
cells, its words' values are their colours, its existence margin is the share of pixels of the asked colour. It is
just enough of a model for FOCUS to find a coloured card, and it uses nothing but the public adapter contract:
:class:`~focus_tool.adapters.base.MLLMAdapter`, ``register_backbone`` and ``register_preset``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from focus_tool.adapters.base import ForwardCounter, MLLMAdapter, Prefill
from focus_tool.adapters.registry import register_backbone
from focus_tool.config import FocusConfig, ProposalConfig, RelevanceConfig
from focus_tool.data.synthetic import CARD_COLORS
from focus_tool.grid import PatchGrid
from focus_tool.presets import register_preset

MODEL_TYPE = "colour_fake"
PRESET = "colour-fake"
SIDE = 8  # cells per grid side
_GREY = np.array([0.5, 0.5, 0.5])
_PHRASE = re.compile(r"\b(" + "|".join(CARD_COLORS) + r") card\b")


def _word_value(word: str) -> np.ndarray:
    rgb = CARD_COLORS.get(word)
    return (np.array(rgb) / 255.0 - _GREY) if rgb is not None else np.zeros(3)


class ColourAdapter(MLLMAdapter):
    """A weightless colour-matching "MLLM" (one KV head, two layers, 3-d values)."""

    preset_name = PRESET
    model_class_name = "ColourAdapter"

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.counter = ForwardCounter()
        self.num_layers = 2

    @classmethod
    def from_pretrained(
        cls, path: str, *, device: str = "cpu", attn_implementation: str = "sdpa", dtype: torch.dtype | None = None
    ) -> ColourAdapter:
        """Open a checkpoint folder (only its config.json: there are no weights)."""
        json.loads((Path(path) / "config.json").read_text())
        return cls(str(path))

    @property
    def attn_implementation(self) -> str:
        """No attention at all; reported as the default kernel."""
        return "sdpa"

    def grid_for(self, image_wh: tuple[int, int]) -> PatchGrid:
        """The whole image stretched onto SIDE x SIDE cells."""
        return PatchGrid.stretched(image_wh, SIDE, SIDE, (SIDE * 8, SIDE * 8))

    def prefill(self, image: Image.Image, text: str, target: str, *, keys_norope: bool = False) -> Prefill:
        """Values: [BOS] + one token per cell (its mean colour) + one token per word of ``text`` (its colour)."""
        cells = np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX), np.float64) / 255.0
        words = text.rstrip("?").split()
        rows = [np.zeros(3), *(cells.reshape(-1, 3) - _GREY), *(_word_value(w) for w in words)]
        values = torch.tensor(np.stack(rows), dtype=torch.float32)[None]  # (1, N, 3)
        first_word = 1 + SIDE * SIDE
        target_words = set(target.split()) & set(CARD_COLORS)
        tpos = [first_word + i for i, w in enumerate(words) if w in target_words]
        self.counter.add(1, values.shape[1], images=1)
        return Prefill(
            layer_values=[values, values],
            input_ids=torch.arange(values.shape[1]),
            visual_positions=list(range(1, first_word)),
            target_positions=tpos,
            grid=self.grid_for(image.size),
            yes_no_margin=float(self._margins([image], [text])[0]),
        )

    def _margins(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        out = []
        for image, text in zip(images, texts, strict=True):
            m = _PHRASE.search(text)
            px = np.asarray(image.convert("RGB"), np.int32)
            share = 0.0
            if m is not None:
                share = float((np.abs(px - np.array(CARD_COLORS[m.group(1)])).max(-1) < 40).mean())
            out.append(40.0 * share - 1.0)  # P(Yes) 0.27 with none of the colour, 0.95 at a tenth of the crop
        return torch.tensor(out, dtype=torch.float32)

    def yes_no_margins(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        """(n,) margin from the share of the asked colour in each image."""
        self.counter.add(len(images), sum(len(t.split()) + SIDE * SIDE for t in texts), images=len(images))
        return self._margins(images, texts)

    def generate(self, image: Image.Image | None, text: str, *, max_new_tokens: int) -> str:
        """Names the question's coloured cards (Stage I); otherwise says whether the first is in view."""
        self.counter.add(1, len(text.split()), images=int(image is not None))
        question = text.rsplit("Question:", 1)[-1]
        phrases = [m.group(0) for m in _PHRASE.finditer(question)]
        if image is None:
            return "I need the info about " + " and ".join(phrases) + "." if phrases else "none"
        return "Yes" if phrases and float(self._margins([image], [phrases[0]])[0]) > 0 else "No"

    def option_log_likelihoods(
        self, images: Sequence[Image.Image], text: str, options: Sequence[str], *, shared_prefix: bool = False
    ) -> torch.Tensor:
        """Every option equally likely (the first wins the argmax)."""
        self.counter.add(1 if shared_prefix else len(options), len(text.split()), images=len(images))
        return torch.zeros(len(options))


def register() -> None:
    """The plugin entry point: the backbone and its preset."""
    register_preset(
        PRESET,
        FocusConfig(
            relevance=RelevanceConfig(layers=(0, 2), clamp_similarity=True),
            proposal=ProposalConfig(k=4, s_min=1, s_max=3, s_dist=1.0),
        ),
        replace=True,
    )
    register_backbone(MODEL_TYPE, ColourAdapter, replace=True)
