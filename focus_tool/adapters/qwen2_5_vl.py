"""Qwen2.5-VL adapter (``Qwen2_5_VLForConditionalGeneration``, e.g. Qwen/Qwen2.5-VL-7B-Instruct).

Loading without torchvision: the stock ``Qwen2_5_VLProcessor`` needs a video processor (torchvision) in
transformers 5.x, so this adapter loads ``AutoImageProcessor`` (PIL backend) and ``AutoTokenizer`` and expands each
``<|image_pad|>`` itself to ``t * g_h * g_w / merge^2`` tokens, as the processor does. It also builds
``mm_token_type_ids`` (1 on image tokens): without them the model silently falls back to 1-D positions instead of
M-RoPE and the logits change (transformers-notes).

Geometry (spec Sec. 8): native resolution. The whole image is ``smart_resize``d to multiples of patch * merge (28 px)
with a pixel count in [min_pixels, max_pixels] (read from the loaded processor); 14-px patches are merged 2 x 2, so
the image tokens are (g_h / 2) x (g_w / 2), contiguous, row-major (``image_grid_thw`` = (1, g_h, g_w)). All merged
tokens form the map grid, which spans the whole image: ``PatchGrid.stretched``.

Answer step (spec Sec. 7, ``answer_mode = "multi"``): :meth:`Qwen25VLAdapter.generate_interleaved` sends the
context image and the crops in one user turn. The checkpoint's template renders content items in order, each image
as its own ``<|vision_start|><|image_pad|><|vision_end|>`` block; each image is ``smart_resize``d on its own and has its
own ``image_grid_thw`` row, so its block expands to that row's ``t * g_h * g_w / merge^2`` tokens.

GQA: the cache holds ``num_key_value_heads`` value heads; they are used as stored (spec Sec. 4.3). Values carry no
rotary embedding, so M-RoPE does not touch the V-V map.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from focus_tool.adapters.base import ForwardCounter, MLLMAdapter, Prefill
from focus_tool.adapters.common import (
    expand_image_tokens,
    load_chat_template,
    reply_first_token,
    reply_log_likelihoods,
    target_positions,
)
from focus_tool.adapters.llava import cache_values
from focus_tool.errors import ModelLoadError
from focus_tool.grid import PatchGrid

logger = logging.getLogger(__name__)
_FALLBACK_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{images}{text}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
_VISION_WRAP = "<|vision_start|>{}<|vision_end|>"


class Qwen25VLAdapter(MLLMAdapter):
    """Adapter for ``Qwen2_5_VLForConditionalGeneration`` checkpoints (native resolution; multi-image answer)."""

    preset_name = "qwen2.5-vl"
    answer_mode = "multi"

    def __init__(
        self,
        model: Any,
        image_processor: Any,
        tokenizer: Any,
        *,
        chat_template: str | None = None,
        model_id: str = "qwen2.5-vl",
    ) -> None:
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.model_id = model_id
        self.counter = ForwardCounter()
        cfg = model.config
        self.image_token_id: int = int(cfg.image_token_id)
        self.video_token_id: int = int(cfg.video_token_id)
        self.image_token: str = str(tokenizer.convert_ids_to_tokens(self.image_token_id))  # "<|image_pad|>"
        self.patch_px: int = int(image_processor.patch_size)  # 14
        self.merge: int = int(image_processor.merge_size)  # 2
        size = dict(image_processor.size)
        self.min_pixels: int = int(size.get("shortest_edge", getattr(image_processor, "min_pixels", 56 * 56)))
        self.max_pixels: int = int(size.get("longest_edge", getattr(image_processor, "max_pixels", 28 * 28 * 1280)))
        vision = cfg.vision_config
        if (int(vision.patch_size), int(vision.spatial_merge_size)) != (self.patch_px, self.merge):
            raise ModelLoadError(
                f"image processor patch/merge {self.patch_px}/{self.merge} differ from the vision tower's "
                f"{vision.patch_size}/{vision.spatial_merge_size}"
            )
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
    ) -> Qwen25VLAdapter:
        """Load model, image processor and tokenizer from a folder in the hub layout or a cached hub id."""
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        model: Any
        try:
            image_processor = AutoImageProcessor.from_pretrained(str(path))
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            chat_template = load_chat_template(path, tokenizer)
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                str(path), dtype=dtype or torch.float32, attn_implementation=attn_implementation
            )
            model = model.to(device)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load a Qwen2.5-VL checkpoint from {path!s}: {e}".split("\n")[0]) from e
        return cls(model, image_processor, tokenizer, chat_template=chat_template, model_id=str(path))

    @property
    def attn_implementation(self) -> str:
        """The attention kernel the language model runs with."""
        return str(getattr(self.model.config.text_config, "_attn_implementation", "sdpa"))

    # ------------------------------------------------------------------ geometry

    def resized_hw(self, image_wh: tuple[int, int]) -> tuple[int, int]:
        """(H, W) px the processor resizes an image to (``smart_resize`` with the loaded min/max_pixels)."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        w, h = image_wh
        rh, rw = smart_resize(h, w, self.patch_px * self.merge, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return int(rh), int(rw)

    def grid_for(self, image_wh: tuple[int, int]) -> PatchGrid:
        """The merged token grid (g_h / 2) x (g_w / 2) over the whole image."""
        rh, rw = self.resized_hw(image_wh)
        cell = self.patch_px * self.merge
        return PatchGrid.stretched(image_wh, rh // cell, rw // cell, (rw, rh))

    # ------------------------------------------------------------------ prompts

    def chat_text(self, text: str, *, n_images: int = 1) -> str:
        """The templated prompt (ChatML, default system message) with the images before the text."""
        content: list[dict[str, str]] = [{"type": "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": text})
        return self._render(content)

    def _render(self, content: list[dict[str, str]]) -> str:
        """One user turn of image / text items, in order, through the chat template, with the generation prompt."""
        if self.chat_template:
            return str(
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": content}],
                    chat_template=self.chat_template,
                    add_generation_prompt=True,
                    tokenize=False,
                )
            )
        vision = _VISION_WRAP.format(self.image_token)
        body = "".join(vision if c["type"] == "image" else c["text"] for c in content)
        return _FALLBACK_TEMPLATE.format(images="", text=body)

    def _encode(self, images: Sequence[Image.Image] | None, prompts: Sequence[str]) -> tuple[Any, list[str]]:
        """Tokenised batch (left padded) with pixel inputs; returns it and the image-expanded prompts.

        ``pixel_values``: (sum_i g_h g_w, 3 * T * 14 * 14) patches of all images; ``image_grid_thw``: (B, 3);
        ``mm_token_type_ids``: (B, N), 1 on image tokens, 2 on video tokens, else 0.
        """
        if images:
            pix = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
            counts = [int(thw.prod()) // self.merge**2 for thw in pix["image_grid_thw"]]
            expanded = [expand_image_tokens(p, self.image_token, [n]) for p, n in zip(prompts, counts, strict=True)]
        else:
            pix, counts = None, [0] * len(prompts)
            expanded = [expand_image_tokens(p, self.image_token, []) for p in prompts]
        enc = self.tokenizer(expanded, return_tensors="pt", padding=True)
        ids = enc["input_ids"]
        found = (ids == self.image_token_id).sum(-1).tolist()
        if found != counts:
            raise RuntimeError(f"image tokens per prompt {found} differ from image_grid_thw counts {counts}")
        enc["mm_token_type_ids"] = (ids == self.image_token_id).int() + 2 * (ids == self.video_token_id).int()
        if pix is not None:
            enc["pixel_values"] = pix["pixel_values"].to(self.dtype)
            enc["image_grid_thw"] = pix["image_grid_thw"]
        return enc.to(self.device), expanded

    def _encode_interleaved(self, images: Sequence[Image.Image], prompt: str) -> Any:
        """One prompt holding ``len(images)`` vision blocks, in order; each block gets its own image's token count.

        ``pixel_values``: the patches of all images, concatenated; ``image_grid_thw``: (n, 3), one row per image.
        """
        if images:
            pix = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
            counts = [int(thw.prod()) // self.merge**2 for thw in pix["image_grid_thw"]]
        else:
            pix, counts = None, []
        enc = self.tokenizer([expand_image_tokens(prompt, self.image_token, counts)], return_tensors="pt")
        ids = enc["input_ids"]
        runs = _run_lengths(torch.nonzero(ids[0] == self.image_token_id).flatten().tolist())
        if runs != counts:
            raise RuntimeError(f"image-token blocks {runs} differ from the image_grid_thw counts {counts}")
        enc["mm_token_type_ids"] = (ids == self.image_token_id).int() + 2 * (ids == self.video_token_id).int()
        if pix is not None:
            enc["pixel_values"] = pix["pixel_values"].to(self.dtype)
            enc["image_grid_thw"] = pix["image_grid_thw"]
        return enc.to(self.device)

    def yes_no_ids(self) -> tuple[int, int]:
        """Token ids of the first token of the assistant reply "Yes" / "No" after the chat template."""
        if self._yes_no is None:
            prompt = self.chat_text("Is there a cat in the image?", n_images=0)
            self._yes_no = (
                reply_first_token(self.tokenizer, prompt, "Yes"),
                reply_first_token(self.tokenizer, prompt, "No"),
            )
        return self._yes_no

    # ------------------------------------------------------------------ model calls (counted here)

    @torch.inference_mode()
    def prefill(self, image: Image.Image, text: str, target: str, *, keys_norope: bool = False) -> Prefill:
        """One forward pass over (image, text), keeping the cache; every merged image token is a map cell."""
        enc, expanded = self._encode([image], [self.chat_text(text)])
        input_ids = enc["input_ids"][0]
        hooks, keys = [], []
        if keys_norope:
            for layer in self._decoder_layers():
                hooks.append(layer.self_attn.k_proj.register_forward_hook(lambda _m, _i, o: keys.append(o)))
        try:
            out = self.model(**enc, use_cache=True, logits_to_keep=1)
        finally:
            for h in hooks:
                h.remove()
        self.counter.add(1, int(enc["attention_mask"].sum()))
        n = input_ids.shape[0]
        values = [cache_values(out.past_key_values, i)[0].float() for i in range(self.num_layers)]  # (H_kv, N, D)
        if values[0].shape[-2] != n:
            raise RuntimeError(f"cache holds {values[0].shape[-2]} positions, prompt has {n}: sliding-window layer?")
        grid = self.grid_for(image.size)
        _, g_h, g_w = (int(v) for v in enc["image_grid_thw"][0])
        if (g_h // self.merge, g_w // self.merge) != (grid.rows, grid.cols):
            raise RuntimeError(f"image_grid_thw {(g_h, g_w)} does not match the computed grid {grid.rows}x{grid.cols}")
        vis = torch.nonzero(input_ids == self.image_token_id).flatten().tolist()  # row-major over (rows, cols)
        if len(vis) != grid.rows * grid.cols:
            raise RuntimeError(f"expected {grid.rows * grid.cols} image tokens, found {len(vis)}")
        tpos = target_positions(self.tokenizer, expanded[0], target, input_ids.cpu())
        yes, no = self.yes_no_ids()
        logits = out.logits[0, -1].float()
        keys_out = None
        if keys_norope:
            d = values[0].shape[-1]
            keys_out = [k[0].float().view(n, -1, d).transpose(0, 1) for k in keys]  # (H_kv, N, D), k bias included
        return Prefill(values, input_ids.cpu(), vis, tpos, grid, float(logits[yes] - logits[no]), keys_out)

    @torch.inference_mode()
    def yes_no_margins(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        """l_Yes - l_No at the last position for each pair; one batched forward, counted as len(images)."""
        enc, _ = self._encode(images, [self.chat_text(t) for t in texts])
        out = self.model(**enc, use_cache=False, logits_to_keep=1)
        self.counter.add(len(images), int(enc["attention_mask"].sum()))
        yes, no = self.yes_no_ids()
        last = out.logits[:, -1].float()  # left padding: the last column is every row's last real token
        return (last[:, yes] - last[:, no]).cpu()

    @torch.inference_mode()
    def generate(self, image: Image.Image | None, text: str, *, max_new_tokens: int) -> str:
        """Greedy decoding; only the new tokens are decoded. Counts one pass."""
        prompt = self.chat_text(text, n_images=0 if image is None else 1)
        enc, _ = self._encode([image] if image is not None else None, [prompt])
        return self._greedy(enc, max_new_tokens)

    @torch.inference_mode()
    def generate_interleaved(self, parts: Sequence[Image.Image | str], *, max_new_tokens: int) -> str:
        """Greedy reply to one user turn of images and text lines, in order. Counts one pass.

        Layout: a line break after each text line that precedes an image and before each text line after the first
        part, so ``[img, "a", img, "b", "q"]`` renders as ``<vision>\na\n<vision>\nb\nq`` (the ZoomEye prompt).
        """
        images, prompt = self._interleaved_prompt(parts)
        return self._greedy(self._encode_interleaved(images, prompt), max_new_tokens)

    def _interleaved_prompt(self, parts: Sequence[Image.Image | str]) -> tuple[list[Image.Image], str]:
        """The images of ``parts`` and the templated prompt of the turn (layout of :meth:`generate_interleaved`)."""
        images = [p for p in parts if isinstance(p, Image.Image)]
        content: list[dict[str, str]] = []
        for i, part in enumerate(parts):
            if isinstance(part, Image.Image):
                content.append({"type": "image"})
                continue
            before_image = i + 1 < len(parts) and isinstance(parts[i + 1], Image.Image)
            content.append({"type": "text", "text": ("\n" if i else "") + part + ("\n" if before_image else "")})
        return images, self._render(content)

    @torch.inference_mode()
    def yes_no_margins_interleaved(self, prompts: Sequence[Sequence[Image.Image | str]]) -> torch.Tensor:
        """(n,) l_Yes - l_No at the last position of each interleaved turn; one forward per prompt, n passes."""
        yes, no = self.yes_no_ids()
        margins = []
        for parts in prompts:
            images, prompt = self._interleaved_prompt(parts)
            enc = self._encode_interleaved(images, prompt)
            last = self.model(**enc, use_cache=False, logits_to_keep=1).logits[0, -1].float()  # (V,)
            self.counter.add(1, int(enc["attention_mask"].sum()))
            margins.append(last[yes] - last[no])
        return torch.stack(margins).cpu() if margins else torch.zeros(0)

    @torch.inference_mode()
    def option_log_likelihoods(self, images: Sequence[Image.Image], text: str, options: Sequence[str]) -> torch.Tensor:
        """(K,) mean log-probability of each option's tokens written as the assistant reply; one pass per option.

        SEAL / ZoomEye logit matching, the contract of :meth:`LlavaAdapter.option_log_likelihoods`: ``images`` then
        ``text`` in one user turn (:meth:`chat_text`), the option written right after the generation prompt
        (ChatML: no space after ``assistant\n``); each (prompt + option) runs as one full sequence (K passes,
        counted as K). Each image is ``smart_resize``d on its own, as in :meth:`generate_interleaved`.
        """
        return self._option_scores(list(images), self.chat_text(text, n_images=len(images)), options)

    @torch.inference_mode()
    def option_log_likelihoods_interleaved(
        self, parts: Sequence[Image.Image | str], options: Sequence[str]
    ) -> torch.Tensor:
        """(K,) as :meth:`option_log_likelihoods` for a turn laid out as :meth:`generate_interleaved`; K passes."""
        images, prompt = self._interleaved_prompt(parts)
        return self._option_scores(images, prompt, options)

    def _option_scores(self, images: list[Image.Image], prompt: str, options: Sequence[str]) -> torch.Tensor:
        """(K,) option scores after ``prompt`` with ``images`` (:func:`reply_log_likelihoods`)."""

        def encode(text: str) -> Any:
            return self._encode_interleaved(images, text)

        return reply_log_likelihoods(self.model, self.tokenizer, self.counter, encode, prompt, options)

    def _greedy(self, enc: Any, max_new_tokens: int) -> str:
        """Greedy ``generate`` on one encoded prompt; decodes only the new tokens and counts one pass."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        self.counter.add(1, int(enc["attention_mask"].sum()))
        new = out[0, enc["input_ids"].shape[1] :]
        return str(self.tokenizer.decode(new, skip_special_tokens=True)).strip()

    def _decoder_layers(self) -> Any:
        return self.model.model.language_model.layers


def _run_lengths(positions: list[int]) -> list[int]:
    """Lengths of the runs of consecutive integers in sorted ``positions`` ([3, 4, 5, 9, 10] -> [3, 2])."""
    runs: list[int] = []
    for i, p in enumerate(positions):
        if i and p == positions[i - 1] + 1:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs
