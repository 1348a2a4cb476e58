r"""LLaVA-1.5 adapter (``LlavaForConditionalGeneration`` + ``LlavaProcessor``), also used by the embedded model.

How the image reaches the encoder (a choice: docs/method.md, Geometry and open point 24): the whole image is padded to a
square with the CLIP mean colour, centred (original LLaVA-1.5 "pad" mode), *before* the processor runs. The processor
then resizes the square to its input size; its centre crop is a no-op on a square. So every pixel of the image is
visible, and the 24 x 24 (or 12 x 12) token grid spans the padded square: ``PatchGrid.padded_square``.

Token layout: one ``<image>`` placeholder expands to (image_size / patch_size)^2 contiguous tokens, row-major,
CLS dropped (``vision_feature_select_strategy="default"``). Prompts use the processor's chat template (image
before the text; LLaVA-1.5's "USER: <image>\n{text} ASSISTANT:"). The FOCUS path never reads attention weights;
only :meth:`LlavaAdapter.attention_to_image` (ViCrop baseline) does, from one decoder layer's attention module
under eager attention, through a forward hook (the model is never asked for all layers' attention outputs).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from focus_tool.adapters.base import Prefill
from focus_tool.adapters.common import option_token_ids, shared_prefix_log_likelihoods
from focus_tool.adapters.hf import TransformersAdapter
from focus_tool.adapters.hf import cache_values as cache_values  # re-exported: its former home
from focus_tool.errors import FocusError, TargetNotPlaced
from focus_tool.grid import PatchGrid
from focus_tool.ops.images import pad_to_square

logger = logging.getLogger(__name__)
_FALLBACK_TEMPLATE = "USER: {image}{text} ASSISTANT:"
_PUNCT_OR_SPACE = re.compile(r"^[\W_▁Ġ]*$")


class LlavaAdapter(TransformersAdapter):
    """Adapter for ``LlavaForConditionalGeneration`` checkpoints (llava-hf/llava-1.5-*-hf and compatible)."""

    preset_name = "llava-1.5"
    supports_image_cache = True  # text after the image: positions follow from the cache length
    family = "LLaVA"
    model_class_name = "LlavaForConditionalGeneration"
    reply_separator = " "  # "... ASSISTANT:" then a space before the reply

    def __init__(self, model: Any, processor: Any, *, model_id: str = "llava") -> None:
        super().__init__(model, processor.tokenizer, model_id=model_id)
        self.processor = processor
        vision = model.config.vision_config
        self.input_px: int = int(vision.image_size)
        self.side: int = int(vision.image_size // vision.patch_size)  # 24 for LLaVA-1.5-336

    # ------------------------------------------------------------------ loading

    @classmethod
    def _load_processors(cls, path: str) -> dict[str, Any]:
        """The stock ``AutoProcessor`` (image processor, tokenizer and chat template in one)."""
        from transformers import AutoProcessor

        return {"processor": AutoProcessor.from_pretrained(path)}

    # ------------------------------------------------------------------ prompts and geometry

    @property
    def encoder_px(self) -> int:
        """The square input side of the vision tower (336 for LLaVA-1.5)."""
        return self.input_px

    def grid_for(self, image_wh: tuple[int, int]) -> PatchGrid:
        """Pad-to-square geometry: the side x side grid spans the padded square."""
        return PatchGrid.padded_square(image_wh, self.side, self.input_px)

    def chat_text(self, text: str, *, with_image: bool) -> str:
        """The full prompt: chat template with the image before the text and the generation prompt."""
        content: list[dict[str, str]] = [{"type": "image"}] if with_image else []
        content.append({"type": "text", "text": text})
        if getattr(self.processor, "chat_template", None):
            return str(
                self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
            )
        image = self.processor.image_token + "\n" if with_image else ""
        return _FALLBACK_TEMPLATE.format(image=image, text=text)

    def _text_prompt(self, text: str) -> str:
        """The templated prompt of ``text`` without an image."""
        return self.chat_text(text, with_image=False)

    def _inputs(self, images: Sequence[Image.Image] | None, texts: Sequence[str]) -> Any:
        padded = [pad_to_square(im if im.mode == "RGB" else im.convert("RGB")) for im in images] if images else None
        enc = self.processor(images=padded, text=list(texts), return_tensors="pt", padding=True)
        enc = enc.to(self.device)
        if "pixel_values" in enc:
            enc["pixel_values"] = enc["pixel_values"].to(self.dtype)
        return enc

    def vision_word_similarity(self, image: Image.Image, text: str) -> torch.Tensor:
        """(P,) per image token, the cosine of its projector output with each word of ``text``'s input embedding,
        clamped at 0 and multiplied over the words: a relevance map from the vision side alone (no LLM pass).

        Used by the synthetic report as the "vision only" pointing baseline.
        """
        enc = self._inputs([image], [self.chat_text("x", with_image=True)])
        with torch.inference_mode():
            feats = self.model.model.get_image_features(pixel_values=enc["pixel_values"])
            feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
            feats = feats[0] if isinstance(feats, (list, tuple)) else feats
            feats = feats.reshape(-1, feats.shape[-1]).float()  # (P, width)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            emb = self.model.get_input_embeddings().weight[ids].float()  # (T, width)
            sim = torch.nn.functional.normalize(feats, dim=-1) @ torch.nn.functional.normalize(emb, dim=-1).T
        return sim.clamp_min(0).prod(-1)  # (P,) all words agree

    def target_token_positions(self, prompt: str, target: str, input_ids: torch.Tensor) -> list[int]:
        """Sequence positions (in the image-expanded ``input_ids``) of the tokens overlapping ``target``.

        Found by character offsets in the templated prompt (docs/method.md, Stage II): tokens whose span overlaps the
        last occurrence of ``target``; whitespace/punctuation-only tokens are dropped.
        """
        start = prompt.rfind(target)
        if start < 0 or not target.strip():
            raise TargetNotPlaced(f"the target {target!r} does not occur in the prompt")
        end = start + len(target)
        enc = self.tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        n_img = int((input_ids == self.image_token_id).sum())
        seen_img = 0
        positions = []
        unk = getattr(self.tokenizer, "unk_token_id", None)
        unknown = 0
        for i, (tid, (a, b)) in enumerate(zip(ids, offsets, strict=True)):
            if tid == self.image_token_id:
                seen_img += 1
            if b <= start or a >= end or tid == self.image_token_id:
                continue
            if _PUNCT_OR_SPACE.match(self.tokenizer.convert_ids_to_tokens(tid) or ""):
                continue
            pos = i + seen_img * (n_img - 1)  # each <image> placeholder expanded to n_img tokens
            if pos >= len(input_ids) or int(input_ids[pos]) != tid:
                raise TargetNotPlaced(f"could not align the target {target!r} with the model's tokens")
            positions.append(pos)
            unknown += int(tid == unk)
        if not positions:
            raise TargetNotPlaced(f"the tokenizer produced no word token for the target {target!r}")
        if unk is not None and unknown == len(positions):
            raise TargetNotPlaced(
                f"the model's vocabulary has no token for the target {target!r}; use words the model knows"
            )
        return positions

    # ------------------------------------------------------------------ model calls (counted here)

    @torch.inference_mode()
    def prefill(self, image: Image.Image, text: str, target: str, *, keys_norope: bool = False) -> Prefill:
        """One forward pass over (image, text), keeping the cache; returns values, positions and geometry."""
        prompt = self.chat_text(text, with_image=True)
        enc = self._inputs([image], [prompt])
        input_ids = enc["input_ids"][0]
        values, keys, margin = self._prefill_forward(enc, image, keys_norope=keys_norope)  # values: (H_kv, N, D)
        vis = torch.nonzero(input_ids == self.image_token_id).flatten().tolist()
        if len(vis) != self.side * self.side:
            raise RuntimeError(f"expected {self.side**2} image tokens, found {len(vis)}")
        tpos = self.target_token_positions(prompt, target, input_ids)
        return Prefill(values, input_ids.cpu(), vis, tpos, self.grid_for(image.size), margin, keys)

    @torch.inference_mode()
    def yes_no_margins(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        """l_Yes - l_No at the last position for each pair; one batched forward, counted as len(images)."""
        enc = self._inputs(images, [self.chat_text(t, with_image=True) for t in texts])
        return self._batch_margins(enc, len(images))

    @torch.inference_mode()
    def generate(self, image: Image.Image | None, text: str, *, max_new_tokens: int) -> str:
        """Greedy decoding; only the new tokens are decoded. Counts one pass."""
        prompt = self.chat_text(text, with_image=image is not None)
        return self._greedy(self._inputs([image] if image is not None else None, [prompt]), max_new_tokens)

    def _chat_text_images(self, text: str, n_images: int) -> str:
        """The chat prompt with ``n_images`` images (in order) before ``text``."""
        if n_images == 1:
            return self.chat_text(text, with_image=True)
        content: list[dict[str, str]] = [{"type": "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": text})
        if getattr(self.processor, "chat_template", None):
            return str(
                self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
            )
        return _FALLBACK_TEMPLATE.format(image=self.processor.image_token * n_images + "\n", text=text)

    @torch.inference_mode()
    def generate_images(self, images: Sequence[Image.Image], text: str, *, max_new_tokens: int) -> str:
        r"""Greedy reply to several images then ``text`` in one prompt (ViCrop's "<image><image>\n{q}"); one pass."""
        prompt = self._chat_text_images(text, len(images))
        return self._greedy(self._inputs(list(images) or None, [prompt]), max_new_tokens)

    @torch.inference_mode()
    def option_log_likelihoods(
        self, images: Sequence[Image.Image], text: str, options: Sequence[str], *, shared_prefix: bool = False
    ) -> torch.Tensor:
        """(K,) mean log-probability of each option's tokens written as the assistant reply.

        SEAL / ZoomEye logit matching. By default each (prompt + " " + option) runs as one full sequence (K passes,
        counted as K). With ``shared_prefix`` (SEAL's own way) the prompt is prefilled once and the options are
        scored as continuations of its cache (:func:`shared_prefix_log_likelihoods`: 1 pass + K continuations),
        when every option's tokens extend the prompt's; otherwise the K-sequence path.
        """
        prompt = self._chat_text_images(text, len(images))
        ids = option_token_ids(self.tokenizer, prompt, options, " ") if shared_prefix else None
        if ids is not None:
            enc = self._inputs(list(images) or None, [prompt])
            return shared_prefix_log_likelihoods(
                self.model, self.counter, enc, ids, pad_id=self._pad_id(), images=len(images)
            )
        base = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        scores = []
        for option in options:
            full = prompt + " " + option.strip()
            n_opt = len(self.tokenizer(full, add_special_tokens=False)["input_ids"]) - base
            if n_opt < 1:
                raise ValueError(f"option {option!r} adds no token to the prompt")
            enc = self._inputs(list(images) or None, [full])
            logits = self.model(**enc, use_cache=False).logits[0, -n_opt - 1 : -1].float()  # (n_opt, V)
            self.counter.add(1, int(enc["attention_mask"].sum()), images=len(images))
            targets = enc["input_ids"][0, -n_opt:]  # (n_opt,)
            scores.append(torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).mean())
        return torch.stack(scores).cpu()

    def attention_to_image(
        self, image: Image.Image, texts: Sequence[str], layer: int, *, gradient: bool = False
    ) -> torch.Tensor:
        """(n, side, side) attention of the last prompt position to the image tokens at decoder ``layer``.

        Head-averaged softmax attention of ``layer`` (0-based, HF's index into the per-layer tuple), read from that
        layer's attention module by a forward hook: eager attention returns its probability matrix (H, N, N), SDPA
        and FlashAttention never build it. With ``gradient`` (ViCrop grad-att) the map is
        attention * ReLU(d log p(top next token) / d attention), one forward + one backward. The grid spans the
        padded square (:meth:`grid_for`). Counts one pass per text.

        Raises:
            FocusError: if the model does not run eager attention.
        """
        if self.attn_implementation != "eager":
            raise FocusError(
                f"attention maps need eager attention, but the model runs {self.attn_implementation!r}; "
                "load it with attn_implementation='eager' (CLI: --attn eager)"
            )
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be in [0, {self.num_layers}), got {layer}")
        maps = []
        for text in texts:
            enc = self._inputs([image], [self.chat_text(text, with_image=True)])
            vis = torch.nonzero(enc["input_ids"][0] == self.image_token_id).flatten()  # (P,)
            captured: list[torch.Tensor | None] = []

            def keep(_m: Any, _i: Any, o: Any, sink: list[torch.Tensor | None] = captured) -> None:
                sink.append(o[1])  # (1, H, N, N) under eager attention, None under SDPA / FlashAttention

            hook = self._decoder_layers()[layer].self_attn.register_forward_hook(keep)
            try:
                with torch.enable_grad() if gradient else torch.no_grad():
                    out = self.model(**enc, use_cache=False, logits_to_keep=1)
                    attn = captured[0] if captured else None  # (1, H, N, N)
                    if attn is None:
                        raise FocusError(f"layer {layer} returned no attention probabilities; is attention eager?")
                    if gradient:
                        if not attn.requires_grad:
                            raise RuntimeError("grad-att needs parameters with requires_grad=True")
                        last = out.logits[0, -1].float()  # (V,)
                        log_p = torch.log_softmax(last, dim=-1)[int(last.argmax())]
                        (grad,) = torch.autograd.grad(log_p, attn)
                        attn = attn * grad.clamp_min(0)
                    row = attn[0, :, -1, vis].detach().float().mean(0)  # (P,) head mean
            finally:
                hook.remove()
            self.counter.add(1, int(enc["attention_mask"].sum()), images=1)
            if row.numel() != self.side * self.side:
                raise RuntimeError(f"expected {self.side**2} image tokens, found {row.numel()}")
            maps.append(row.view(self.side, self.side))
        return torch.stack(maps).cpu()
