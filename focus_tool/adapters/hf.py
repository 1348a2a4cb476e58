"""Model-call plumbing shared by the adapters of transformers checkpoints.

:class:`TransformersAdapter` holds what every adapter does the same way around a ``*ForConditionalGeneration`` model:
loading (model class, dtype, attention kernel, the :class:`~focus_tool.errors.ModelLoadError` wrapping), the counted
prefill forward (through the image-prefix cache when enabled) and the per-layer values read from its cache, Yes/No
token ids, batched Yes/No margins and greedy decoding. The chat-template adapters build on it in
:mod:`focus_tool.adapters.chat`.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from PIL import Image

from focus_tool.adapters.base import ForwardCounter, LMDims, MLLMAdapter, Reply
from focus_tool.adapters.common import (
    ContinuationInputs,
    n_images,
    reply_first_token,
)
from focus_tool.adapters.prefix_cache import output_cache
from focus_tool.errors import ModelLoadError
from focus_tool.prompts import existence_prompt


def cache_values(cache: Any, layer: int) -> torch.Tensor:
    """Values of ``layer`` from a transformers 5.x ``DynamicCache``: (B, H_kv, N, D)."""
    return cache.layers[layer].values


class TransformersAdapter(MLLMAdapter):
    """An adapter around one transformers ``*ForConditionalGeneration`` model and its tokenizer.

    A subclass names its model class and family (:attr:`model_class_name`, :attr:`family`), loads its processors
    (:meth:`_load_processors`), gives the text-only prompt the Yes/No ids are read after (:meth:`_text_prompt`) and
    keeps everything model-specific: prompts, token layout, geometry.
    """

    family: ClassVar[str]  # in messages: "cannot load a {family} checkpoint from ..."
    model_class_name: ClassVar[str]  # the transformers class, e.g. "LlavaForConditionalGeneration"
    reply_separator: ClassVar[str] = ""  # what the prompt format writes between the generation prompt and a reply

    def __init__(self, model: Any, tokenizer: Any, *, model_id: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.model_id = model_id
        self.counter = ForwardCounter()
        cfg = model.config
        self.image_token_id: int = int(cfg.image_token_id)
        self.num_layers = int(cfg.text_config.num_hidden_layers)
        self.num_kv_heads = int(getattr(cfg.text_config, "num_key_value_heads", cfg.text_config.num_attention_heads))
        self._yes_no: tuple[int, int] | None = None
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        attn_implementation: str = "sdpa",
    ) -> Self:
        """Load the model and its processors from a local folder in the hub layout or a hub id (cached locally).

        The processors come from :meth:`_load_processors`; the model loads at ``dtype`` (default float32) with
        ``attn_implementation`` and moves to ``device``.

        Raises:
            ModelLoadError: if the checkpoint does not load (the first line of the cause).
        """
        import transformers

        model_class = getattr(transformers, cls.model_class_name)
        model: Any
        try:
            processors = cls._load_processors(str(path))
            model = model_class.from_pretrained(
                str(path), dtype=dtype or torch.float32, attn_implementation=attn_implementation
            )
            model = model.to(device)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load a {cls.family} checkpoint from {path!s}: {e}".split("\n")[0]) from e
        return cls(model, **processors, model_id=str(path))

    @classmethod
    @abstractmethod
    def _load_processors(cls, path: str) -> dict[str, Any]:
        """The processors of the checkpoint at ``path``, as keyword arguments of the constructor."""

    @property
    def lm_dims(self) -> LMDims:
        """Layers, hidden and FFN width of the language model, from its config."""
        cfg = self.model.config.text_config
        return LMDims(int(cfg.num_hidden_layers), int(cfg.hidden_size), int(cfg.intermediate_size))

    @property
    def attn_implementation(self) -> str:
        """The attention kernel the language model runs with."""
        return str(getattr(self.model.config.text_config, "_attn_implementation", "sdpa"))

    # ------------------------------------------------------------------ prompts

    @abstractmethod
    def _text_prompt(self, text: str) -> str:
        """The templated prompt of ``text`` alone (no image), ending with the generation prompt."""

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` that tokenize to the unknown token (closed word-level vocabularies, e.g. the
        embedded model's); none where the tokenizer has no unknown token or never produces it.
        """
        unk = self.tokenizer.unk_token_id
        if unk is None:
            return []
        words = dict.fromkeys(re.findall(r"[^\W\d_]+", text))
        return [w for w in words if unk in self.tokenizer(w, add_special_tokens=False)["input_ids"]]

    def vocabulary(self) -> list[str]:
        """The alphabetic words of a small (closed, < 2000 entries) vocabulary, sorted; else empty."""
        vocab = self.tokenizer.get_vocab()
        if len(vocab) >= 2000:
            return []
        return sorted(w for w in vocab if w.isalpha())

    def reply_token_ids(self, words: Sequence[str]) -> list[int] | None:
        """First token id of each of ``words`` as the assistant reply after the chat template (cf. yes_no_ids)."""
        prompt = self._text_prompt(existence_prompt("cat"))
        return [reply_first_token(self.tokenizer, prompt, self.reply_separator + w) for w in words]

    def yes_no_ids(self) -> tuple[int, int]:
        """Token ids of the first token of the assistant reply "Yes" / "No" after the chat template."""
        if self._yes_no is None:
            prompt = self._text_prompt(existence_prompt("cat"))
            yes, no = (reply_first_token(self.tokenizer, prompt, self.reply_separator + w) for w in ("Yes", "No"))
            self._yes_no = (yes, no)
        return self._yes_no

    # ------------------------------------------------------------------ model calls (counted here)

    def _prefill_forward(
        self, enc: Any, image: Image.Image, *, keys_norope: bool
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, float]:
        """The counted prefill forward of ``enc`` (one sequence with ``image``), keeping the cache.

        Runs through the image-prefix cache when the adapter supports it and it is enabled, except with
        ``keys_norope`` (the k_proj hooks need the whole sequence). Returns per decoder layer the cached values
        (H_kv, N, D); per layer the pre-RoPE keys (H_kv, N, D), the k_proj outputs (bias included where the model has
        one), when ``keys_norope``, else None; and l_Yes - l_No at the last position.

        Raises:
            RuntimeError: if the cache holds fewer positions than the prompt (a sliding-window layer).
        """
        hooks, keys = [], []
        if keys_norope:
            for layer in self._decoder_layers():
                hooks.append(layer.self_attn.k_proj.register_forward_hook(lambda _m, _i, o: keys.append(o)))
        release = None
        reused = 0
        try:
            if self.supports_image_cache and self.image_cache is not None and not keys_norope:
                run = self.image_cache.run(self.model, enc, image, self.image_token_id)
                out, release = run.out, run.release
                if run.hit:
                    reused = run.reused_tokens
                    self.counter.add_reuse(reused)
            else:
                out = self.model(**enc, use_cache=True, logits_to_keep=1)
        finally:
            for h in hooks:
                h.remove()
        self.counter.add(1, int(enc["attention_mask"].sum()), images=0 if reused else 1, reused=reused)
        n = enc["input_ids"].shape[1]
        values = [cache_values(output_cache(out), i)[0].float() for i in range(self.num_layers)]  # (H_kv, N, D)
        if release is not None:
            values = [v.clone() for v in values]  # copied out: the cache goes back to the image-prefix LRU
            release()
        if values[0].shape[-2] != n:
            raise RuntimeError(f"cache holds {values[0].shape[-2]} positions, prompt has {n}: sliding-window layer?")
        keys_out = None
        if keys_norope:
            d = values[0].shape[-1]
            keys_out = [k[0].float().view(n, -1, d).transpose(0, 1) for k in keys]  # (H_kv, N, D)
        yes, no = self.yes_no_ids()
        logits = out.logits[0, -1].float()  # (V,)
        return values, keys_out, float(logits[yes] - logits[no])

    def _batch_margins(self, enc: Any, n_pairs: int) -> torch.Tensor:
        """(B,) l_Yes - l_No at the last position of each row of the left-padded batch ``enc``; counts ``n_pairs``."""
        out = self.model(**enc, use_cache=False, logits_to_keep=1)
        self.counter.add(n_pairs, int(enc["attention_mask"].sum()), images=n_images(enc))
        yes, no = self.yes_no_ids()
        last = out.logits[:, -1].float()  # (B, V); left padding: the last column is every row's last real token
        return (last[:, yes] - last[:, no]).cpu()

    def _pad_id(self) -> int:
        """The padding token id (the EOS id when the tokenizer has no pad token)."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return int(pad)

    def _continuation_inputs(self, enc: Any) -> ContinuationInputs | None:
        """Extra inputs of a continuation of the prefilled prompt ``enc`` (none: positions follow the cache)."""
        return None

    def _greedy(self, enc: Any, max_new_tokens: int) -> Reply:
        """Greedy ``generate`` on one encoded prompt; decodes only the new tokens and counts one pass.

        The reply carries the mean log-probability of its non-special tokens, from the logits greedy decoding
        computes anyway (no extra pass).
        """
        pad = self._pad_id()
        out = self.model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
        self.counter.add(1, int(enc["attention_mask"].sum()), images=n_images(enc))
        new = out.sequences[0, enc["input_ids"].shape[1] :]
        logp = torch.stack([torch.log_softmax(s[0].float(), dim=-1)[t] for s, t in zip(out.logits, new, strict=False)])
        special = set(self.tokenizer.all_special_ids)
        keep = torch.tensor([int(t) not in special for t in new[: len(logp)]], dtype=torch.bool)
        mean = float(logp[keep].mean()) if bool(keep.any()) else (float(logp.mean()) if len(logp) else None)
        first = torch.log_softmax(out.logits[0][0].float(), dim=-1).cpu() if out.logits else None
        return Reply(str(self.tokenizer.decode(new, skip_special_tokens=True)).strip(), mean, first)

    def _decoder_layers(self) -> Any:
        """The language model's decoder layers (each with its ``self_attn``)."""
        return self.model.model.language_model.layers
