"""The model-adapter protocol the pipeline depends on, and the forward-pass counter.

An adapter owns everything model-specific: prompt building (image before text), the image-token layout and its
:class:`~focus_tool.grid.PatchGrid`, target-token positions, the cache accessor, Yes/No token ids, batching.
Every model call goes through one of its public methods, which count forward passes at that boundary.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from PIL import Image

from focus_tool.adapters.prefix_cache import ImagePrefixCache
from focus_tool.grid import PatchGrid

Phase = Literal["search", "answer", "extraction"]
AnswerMode = Literal["single", "multi"]


PHASES: tuple[Phase, ...] = ("search", "answer", "extraction")


class Reply(str):
    """A generated reply: the text (a ``str``) plus the mean log-probability of its tokens.

    ``mean_logprob`` is the mean over the generated tokens that are not special tokens (EOS, padding) of
    log p(token | prompt, earlier tokens) under greedy decoding; None when the adapter cannot tell (a plugin's
    ``generate`` returning a plain ``str``). ``first_logprobs`` is the (V,) log-distribution of the first reply
    token: the letter scheme reads every option letter's probability from it (:meth:`MLLMAdapter.reply_token_ids`).
    """

    mean_logprob: float | None
    first_logprobs: torch.Tensor | None  # (V,) log-softmax of the first generated position, None if not kept

    def __new__(cls, text: str, mean_logprob: float | None = None, first_logprobs: torch.Tensor | None = None) -> Reply:
        """The reply ``text`` with its mean token log-probability and its first position's distribution."""
        reply = super().__new__(cls, text)
        reply.mean_logprob = mean_logprob
        reply.first_logprobs = first_logprobs
        return reply


def _zeros() -> dict[str, int]:
    return dict.fromkeys(PHASES, 0)


@dataclass
class ForwardCounter:
    """Counts model work per phase at the model-call boundary.

    - ``counts``: sequences run from an empty cache (the paper's forward passes, App. A.2: a generate call counts
      once, a batch of n crops counts n);
    - ``tokens``: prompt tokens actually computed (a prefill whose image prefix came from the encoded-image cache
      counts only its suffix; a continuation of a cached prefix counts only its own tokens);
    - ``images``: images run through the vision tower;
    - ``continuations``: rows scored as continuations of a cached prefix (answer options scored on one prefill);
      they are not passes, their tokens are in ``tokens``.
    ``prefill_tokens`` is every prompt token of every counted sequence (reused prefix tokens included, as before).
    """

    counts: dict[str, int] = field(default_factory=_zeros)
    tokens: dict[str, int] = field(default_factory=_zeros)
    images: dict[str, int] = field(default_factory=_zeros)
    continuations: dict[str, int] = field(default_factory=_zeros)
    prefill_tokens: int = 0
    phase: Phase = "search"
    image_cache_hits: int = 0  # prefills whose image prefix came from the encoded-image cache
    reused_tokens: int = 0  # prompt tokens served from that cache (counted in prefill_tokens, not recomputed)

    def add(self, n_sequences: int, n_tokens: int, *, images: int = 0, reused: int = 0) -> None:
        """Record ``n_sequences`` passes over ``n_tokens`` prompt tokens (``reused`` of them served from the
        encoded-image cache) and ``images`` vision-tower images in the current phase.
        """
        self.counts[self.phase] += n_sequences
        self.prefill_tokens += n_tokens
        self.tokens[self.phase] += n_tokens - reused
        self.images[self.phase] += images
        self.log(n_sequences, n_tokens - reused, reused)

    def add_continuation(self, n_rows: int, n_tokens: int, context: int) -> None:
        """Record ``n_rows`` continuations of one cached prefix of ``context`` tokens, ``n_tokens`` new in all."""
        self.continuations[self.phase] += n_rows
        self.prefill_tokens += n_tokens
        self.tokens[self.phase] += n_tokens
        self.log(n_rows, n_tokens, context)

    def log(self, n_rows: int, n_new: int, context: int) -> None:
        """Hook for a recording counter (the eval harness's FLOPs estimate); the base counter keeps no log."""

    @contextlib.contextmanager
    def in_phase(self, phase: Phase) -> Iterator[None]:
        """Attribute the passes made inside the block to ``phase``."""
        old, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = old

    def add_reuse(self, n_tokens: int) -> None:
        """Record one prefill whose first ``n_tokens`` came from the encoded-image cache."""
        self.image_cache_hits += 1
        self.reused_tokens += n_tokens

    def reset(self) -> None:
        """Zero all counts."""
        self.counts, self.tokens, self.images, self.continuations = _zeros(), _zeros(), _zeros(), _zeros()
        self.prefill_tokens = 0
        self.image_cache_hits = 0
        self.reused_tokens = 0


@dataclass(frozen=True)
class LMDims:
    """The language model's dimensions, what the harness's analytic FLOPs estimate needs.

    Attributes:
        layers: decoder layers L.
        hidden: hidden width d.
        ffn: feed-forward width m.
    """

    layers: int
    hidden: int
    ffn: int


@dataclass
class Prefill:
    """One prefilled (image, prompt): the cache, token layout and geometry.

    Attributes:
        layer_values: per decoder layer, the cached values of the single sequence, each (H_kv, N, D).
        layer_keys_norope: per layer, pre-RoPE keys (H_kv, N, D) when requested (K-K ablation), else None.
        input_ids: (N,) token ids.
        visual_positions: (P,) sequence positions of the map's visual tokens, row-major over ``grid``.
        target_positions: sequence positions of the target phrase's tokens.
        grid: geometry of the map tokens.
        yes_no_margin: l_Yes - l_No at the last position (a free full-image existence score).
    """

    layer_values: list[torch.Tensor]
    input_ids: torch.Tensor
    visual_positions: list[int]
    target_positions: list[int]
    grid: PatchGrid
    yes_no_margin: float
    layer_keys_norope: list[torch.Tensor] | None = None


class MLLMAdapter(ABC):
    """What the FOCUS pipeline needs from a multimodal LLM.

    ``answer_mode`` selects the Stage VI input (docs/method.md, Stage VI): ``"single"`` (global-view models such as
    LLaVA-1.5: one crop, union or canvas through :meth:`generate`) or ``"multi"`` (global-local / native models: the
    context image with the outlined ROIs followed by one crop per ROI, through :meth:`generate_interleaved`).
    """

    answer_mode: ClassVar[AnswerMode] = "single"
    supports_image_cache: ClassVar[bool] = False
    # the family's FOCUS preset (a key of focus_tool.presets.PRESETS; "default" is the generic one); every
    # registered backbone names its own (tests/test_registry.py)
    preset_name: ClassVar[str] = "default"
    # the transformers class the adapter loads (what `focus models` lists); "" for an adapter without one
    model_class_name: ClassVar[str] = ""
    model_id: str
    counter: ForwardCounter
    num_layers: int
    image_cache: ImagePrefixCache | None = None

    def enable_image_cache(self, max_entries: int = 2) -> bool:
        """Reuse the encoded image (its KV prefix) across prefills on the same image; False if unsupported."""
        if not self.supports_image_cache:
            return False
        self.image_cache = ImagePrefixCache(max_entries)
        return True

    @abstractmethod
    def prefill(self, image: Image.Image, text: str, target: str, *, keys_norope: bool = False) -> Prefill:
        """One forward pass over (image, ``text``) with the cache kept; ``target`` must occur in ``text``."""

    @abstractmethod
    def yes_no_margins(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        """(n,) l_Yes - l_No for each (image, text) pair, batched; counts n passes."""

    @abstractmethod
    def generate(self, image: Image.Image | None, text: str, *, max_new_tokens: int) -> str:
        """Greedy reply to ``text`` (with ``image`` first, if any); counts one pass.

        Built-in adapters return a :class:`Reply` (the text with its mean token log-probability).
        """

    def generate_interleaved(self, parts: Sequence[Image.Image | str], *, max_new_tokens: int) -> str:
        """Greedy reply to one user turn of images and text lines in the given order; counts one pass.

        Text parts are plain lines (no surrounding line breaks); the adapter lays them out as its prompt format
        requires. Only adapters with ``answer_mode == "multi"`` implement it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} takes one image per prompt (answer_mode={self.answer_mode!r}); "
            "it has no interleaved multi-image generate"
        )

    # ------------------------------------------------------------------ optional, used by the baselines / harness

    def generate_images(self, images: Sequence[Image.Image], text: str, *, max_new_tokens: int) -> str:
        """Greedy reply to ``images`` (in order) followed by ``text`` in one user turn; counts one pass.

        ViCrop's final answer (original image + crop in one prompt). Default: :meth:`generate_interleaved`.
        """
        if len(images) == 1:
            return self.generate(images[0], text, max_new_tokens=max_new_tokens)
        return self.generate_interleaved([*images, text], max_new_tokens=max_new_tokens)

    def option_log_likelihoods(
        self, images: Sequence[Image.Image], text: str, options: Sequence[str], *, shared_prefix: bool = False
    ) -> torch.Tensor:
        """(K,) mean log-probability of each option's tokens as the assistant reply to (``images``, ``text``).

        The V* logit-matching answer scheme (SEAL / ZoomEye): the option with the highest mean log-probability
        (lowest mean cross-entropy) is the model's choice. Counts one pass per option; with ``shared_prefix`` the
        prompt is prefilled once and the options are scored as continuations of its cache (one pass), where the
        adapter can (else it falls back to K passes).
        """
        raise NotImplementedError(f"{type(self).__name__} has no option likelihoods (V* logit matching)")

    def option_log_likelihoods_interleaved(
        self, parts: Sequence[Image.Image | str], options: Sequence[str], *, shared_prefix: bool = False
    ) -> torch.Tensor:
        """(K,) as :meth:`option_log_likelihoods`, for one user turn of images and text lines in the given order.

        Laid out as :meth:`generate_interleaved` lays out ``parts``. ZoomEye's Global+Local final answer under logit
        matching (main image, caption, zoomed view, caption, question). Counts one pass per option.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no interleaved option likelihoods (answer_mode={self.answer_mode!r})"
        )

    def yes_no_margins_interleaved(self, prompts: Sequence[Sequence[Image.Image | str]]) -> torch.Tensor:
        """(n,) l_Yes - l_No at the last position of each prompt, a user turn of images and text lines in order.

        Laid out as :meth:`generate_interleaved` lays out its parts. ZoomEye's Global+Local confidences (the main
        image with the focus region outlined, then the zoomed-in view). Counts one pass per prompt.
        """
        raise NotImplementedError(
            f"{type(self).__name__} takes one image per Yes/No prompt (answer_mode={self.answer_mode!r}); "
            "it has no interleaved multi-image Yes/No margins"
        )

    def attention_to_image(
        self, image: Image.Image, texts: Sequence[str], layer: int, *, gradient: bool = False
    ) -> torch.Tensor:
        """(n, rows, cols) attention of the last prompt position to the image tokens at decoder ``layer``.

        Averaged over heads, one map per text. With ``gradient``, the map is attention * ReLU(d log p(top token) /
        d attention) (ViCrop grad-att; one forward + one backward per text). Needs eager attention; counts one pass
        per text. Only ViCrop uses it.
        """
        raise NotImplementedError(f"{type(self).__name__} exposes no attention maps (ViCrop needs them)")

    def reply_token_ids(self, words: Sequence[str]) -> list[int] | None:
        """Token ids of the first token of each of ``words`` written as the assistant reply; None if unknown."""
        return None

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` the model's tokenizer cannot represent (a closed vocabulary); none for byte-level or
        byte-fallback tokenizers.
        """
        return []

    def vocabulary(self) -> list[str]:
        """The words a closed-vocabulary model knows (for a refusal message); empty for open vocabularies."""
        return []

    @property
    def encoder_px(self) -> int | None:
        """The side (px) of one vision-encoder input (the global view or a tile), None without a fixed size.

        ViCrop's high-resolution split and ZoomEye's patch size read it.
        """
        return None

    @property
    def lm_dims(self) -> LMDims | None:
        """The language model's dimensions (for the analytic FLOPs estimate), None when unknown."""
        return None

    @abstractmethod
    def grid_for(self, image_wh: tuple[int, int]) -> PatchGrid:
        """The map grid geometry for an image of this size (without running the model)."""

    @property
    @abstractmethod
    def attn_implementation(self) -> str:
        """The attention kernel in use ("sdpa", "eager", "flash_attention_2")."""
