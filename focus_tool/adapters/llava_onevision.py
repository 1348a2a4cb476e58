"""LLaVA-OneVision adapter (``LlavaOnevisionForConditionalGeneration``, e.g. llava-hf/llava-onevision-qwen2-7b-ov-hf).

Loading without torchvision: in transformers 5.x the stock ``LlavaOnevisionProcessor`` needs a video processor,
which needs torchvision. This adapter loads ``AutoImageProcessor`` (the PIL backend when torchvision is absent) and
``AutoTokenizer`` and does the processor's one job itself: it expands each ``<image>`` placeholder of the templated
prompt to the number of image features the model will scatter into it.

Token layout of one image (spec Sec. 8) [hf: ``pack_image_features``]::

    [side*side base-view tokens][row 0: w local tokens + newline] ... [row h-1: w local tokens + newline]

The local grid (h, w) comes from the model's own helpers: ``get_anyres_image_grid_shape`` (best pinpoint tile
grid), ``unpad_image`` (drop the feature rows/columns that lie in the padding) and the ``anyres_max_N`` shrink
(bilinear resize when the grid exceeds N tiles' worth of features). The relevance map uses the local tokens only
(paper §3.2); newline and base tokens are excluded from the map but stay in the row sums (spec Sec. 4.4). The
unpadded local grid spans the whole image: ``PatchGrid.anyres_local``.

Answer step (spec Sec. 7, ``answer_mode = "multi"``): :meth:`LlavaOnevisionAdapter.generate_interleaved` sends the
context image and the crops in one user turn. With several images in a sample the model encodes **each image as one
base view, without anyres tiles** (``need_patching`` is true only for a sample with exactly one image, in both the
image processor and ``get_image_features``): the processor pads each image to a square (mean colour) and resizes it to
one tile, and ``pack_image_features`` appends one ``image_newline``, so each image takes ``side^2 + 1`` tokens (730 on
the 7B checkpoint). ``batch_num_images`` must reach the model, or it would try to unpack anyres tiles.

Interleaving: llava-hf's chat template renders **all images of a turn first**, then every text item on its own line,
so with the stock template the prompt is ``<image><image>...\n<caption 1>\n<caption 2>...\n<question>``: the
captions keep the image order but no longer sit next to their image. The adapter keeps the checkpoint's template (the
format the model was evaluated with in transformers) and logs this once; the token expansion is exact either way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from focus_tool.adapters.base import ForwardCounter, MLLMAdapter, Prefill
from focus_tool.adapters.common import (
    expand_image_tokens,
    keeps_content_order,
    load_chat_template,
    reply_first_token,
    reply_log_likelihoods,
    target_positions,
)
from focus_tool.adapters.llava import cache_values
from focus_tool.errors import ModelLoadError
from focus_tool.grid import PatchGrid

logger = logging.getLogger(__name__)
_FALLBACK_OPEN, _FALLBACK_CLOSE = "<|im_start|>user ", "<|im_end|><|im_start|>assistant\n"  # llava-hf's layout


class LlavaOnevisionAdapter(MLLMAdapter):
    """Adapter for ``LlavaOnevisionForConditionalGeneration`` checkpoints (anyres; multi-image answer)."""

    preset_name = "llava-onevision"
    answer_mode = "multi"
    supports_image_cache = True  # text after the image: positions follow from the cache length

    def __init__(
        self,
        model: Any,
        image_processor: Any,
        tokenizer: Any,
        *,
        chat_template: str | None = None,
        model_id: str = "llava-onevision",
    ) -> None:
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.model_id = model_id
        self.counter = ForwardCounter()
        cfg = model.config
        vision = cfg.vision_config
        self.image_token_id: int = int(cfg.image_token_id)
        self.image_token: str = str(tokenizer.convert_ids_to_tokens(self.image_token_id))
        self.tile_px: int = int(vision.image_size)  # 384 for the 7B checkpoint
        self.side: int = int(vision.image_size // vision.patch_size)  # 27: 729 base tokens per tile
        self.pinpoints: list[list[int]] = [list(p) for p in cfg.image_grid_pinpoints]
        self.aspect_ratio_setting: str = str(cfg.vision_aspect_ratio)  # "anyres_max_9"
        self.num_layers = int(cfg.text_config.num_hidden_layers)
        self.num_kv_heads = int(getattr(cfg.text_config, "num_key_value_heads", cfg.text_config.num_attention_heads))
        self._yes_no: tuple[int, int] | None = None
        self._order_logged = False
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self._check_consistency()

    def _check_consistency(self) -> None:
        """The image processor must tile exactly as the model unpacks (same pinpoints, same tile size)."""
        cfg = self.model.config
        if cfg.vision_feature_select_strategy != "full":
            raise ModelLoadError(
                f"vision_feature_select_strategy={cfg.vision_feature_select_strategy!r} is not supported; "
                "OneVision's SigLIP tower has no CLS token, so the checkpoint must use 'full'"
            )
        if not self.aspect_ratio_setting.startswith("anyres_max_"):
            raise ModelLoadError(f"vision_aspect_ratio={self.aspect_ratio_setting!r}: only 'anyres_max_N' is supported")
        ip_pinpoints = [list(p) for p in getattr(self.image_processor, "image_grid_pinpoints", None) or []]
        if ip_pinpoints != self.pinpoints:
            raise ModelLoadError("the image processor's image_grid_pinpoints differ from the model config's")
        size = dict(self.image_processor.size)
        tile = size.get("height") or size.get("shortest_edge")
        if tile != self.tile_px:
            raise ModelLoadError(f"the image processor tiles at {tile} px but the vision tower takes {self.tile_px} px")

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        attn_implementation: str = "sdpa",
    ) -> LlavaOnevisionAdapter:
        """Load model, image processor and tokenizer from a folder in the hub layout or a cached hub id."""
        from transformers import AutoImageProcessor, AutoTokenizer, LlavaOnevisionForConditionalGeneration

        model: Any
        try:
            image_processor = AutoImageProcessor.from_pretrained(str(path))
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            chat_template = load_chat_template(path, tokenizer)
            model = LlavaOnevisionForConditionalGeneration.from_pretrained(
                str(path), dtype=dtype or torch.float32, attn_implementation=attn_implementation
            )
            model = model.to(device)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load a LLaVA-OneVision checkpoint from {path!s}: {e}".split("\n")[0]) from e
        return cls(model, image_processor, tokenizer, chat_template=chat_template, model_id=str(path))

    @property
    def attn_implementation(self) -> str:
        """The attention kernel the language model runs with."""
        return str(getattr(self.model.config.text_config, "_attn_implementation", "sdpa"))

    # ------------------------------------------------------------------ geometry

    def local_grid_shape(self, image_wh: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the unpadded, possibly shrunk local grid for an image of ``image_wh``, by the model's helpers."""
        from transformers.models.llava_onevision.modeling_llava_onevision import (
            get_anyres_image_grid_shape,
            unpad_image,
        )

        w_img, h_img = image_wh
        tiles_h, tiles_w = get_anyres_image_grid_shape((h_img, w_img), self.pinpoints, self.tile_px)
        feats = torch.empty(0, tiles_h * self.side, tiles_w * self.side)  # (C=0, H_g, W_g): shape only
        h, w = unpad_image(feats, (h_img, w_img)).shape[1:]
        max_tiles = int(self.aspect_ratio_setting.removeprefix("anyres_max_"))  # "anyres_max_9" -> 9
        ratio = math.sqrt(h * w / (max_tiles * self.side**2))
        if ratio > 1.1:  # bilinear shrink in pack_image_features
            h, w = int(h // ratio), int(w // ratio)
        return int(h), int(w)

    def num_image_tokens(self, image_wh: tuple[int, int]) -> int:
        """Image tokens of one image: side^2 base + h (w + 1) local with newlines."""
        h, w = self.local_grid_shape(image_wh)
        return self.side * self.side + h * (w + 1)

    def grid_for(self, image_wh: tuple[int, int]) -> PatchGrid:
        """The local grid h x w over the whole image (newline and base tokens are not map cells)."""
        h, w = self.local_grid_shape(image_wh)
        return PatchGrid.anyres_local(image_wh, h, w, self._resized_wh(image_wh))

    def _resized_wh(self, image_wh: tuple[int, int]) -> tuple[int, int]:
        """(w, h) px of the image inside its best pinpoint canvas (before padding), as the processor resizes it."""
        from transformers.image_processing_utils import select_best_resolution

        w_img, h_img = image_wh
        hb, wb = select_best_resolution((h_img, w_img), self.pinpoints)
        sw, sh = wb / w_img, hb / h_img
        if sw < sh:
            return wb, min(math.ceil(h_img * sw), hb)
        return min(math.ceil(w_img * sh), wb), hb

    # ------------------------------------------------------------------ prompts

    def chat_text(self, text: str, *, n_images: int = 1) -> str:
        """The templated prompt with ``n_images`` image placeholders before the text and the generation prompt."""
        content: list[dict[str, str]] = [{"type": "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": text})
        return self._render(content)

    def _render(self, content: list[dict[str, str]]) -> str:
        """One user turn of image / text items through the chat template, with the generation prompt."""
        if self.chat_template:
            return str(
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": content}],
                    chat_template=self.chat_template,
                    add_generation_prompt=True,
                    tokenize=False,
                )
            )
        body = "".join(self.image_token if c["type"] == "image" else "\n" + c["text"] for c in content)
        return _FALLBACK_OPEN + body + _FALLBACK_CLOSE

    @property
    def num_multi_image_tokens(self) -> int:
        """Image tokens of each image in a several-image prompt: one base view (side^2) + one image_newline."""
        return self.side * self.side + 1

    def _encode(self, images: Sequence[Image.Image] | None, prompts: Sequence[str]) -> tuple[Any, list[str]]:
        """Tokenised batch (left padded) with pixel inputs; returns it and the image-expanded prompts.

        One image per prompt (or none). ``pixel_values``: (B, max_tiles + 1, 3, tile, tile), zero-padded over tiles;
        ``image_sizes``: (B, 2) as (H, W).
        """
        if images:
            rgb = [im.convert("RGB") for im in images]
            pix = self.image_processor(images=rgb, return_tensors="pt")
            counts = [self.num_image_tokens((int(w), int(h))) for h, w in pix["image_sizes"].tolist()]
            expanded = [expand_image_tokens(p, self.image_token, [n]) for p, n in zip(prompts, counts, strict=True)]
        else:
            pix, counts = None, [0] * len(prompts)
            expanded = [expand_image_tokens(p, self.image_token, []) for p in prompts]
        enc = self.tokenizer(expanded, return_tensors="pt", padding=True)
        found = (enc["input_ids"] == self.image_token_id).sum(-1).tolist()
        if found != counts:
            raise RuntimeError(f"image tokens per prompt {found} differ from the model's feature counts {counts}")
        if pix is not None:
            enc["pixel_values"] = pix["pixel_values"].to(self.dtype)
            enc["image_sizes"] = pix["image_sizes"]
        return enc.to(self.device), expanded

    def _encode_interleaved(self, images: Sequence[Image.Image], prompt: str) -> Any:
        """One prompt holding ``len(images)`` placeholders, in order. One image: the anyres path of :meth:`_encode`.

        Several images: ``pixel_values`` (n, 1, 3, tile, tile), one padded-to-square base view each;
        ``image_sizes`` (n, 2); ``batch_num_images`` (1,) = [n], which switches the model to one view per image.
        """
        if len(images) <= 1:
            return self._encode(list(images) or None, [prompt])[0]
        n = len(images)
        pix = self.image_processor(images=[[im.convert("RGB") for im in images]], return_tensors="pt")
        if tuple(pix["pixel_values"].shape[:2]) != (n, 1):
            shape = tuple(pix["pixel_values"].shape)
            raise RuntimeError(f"expected one base view per image, the processor gave pixel_values {shape}")
        counts = [self.num_multi_image_tokens] * n
        enc = self.tokenizer([expand_image_tokens(prompt, self.image_token, counts)], return_tensors="pt")
        found = int((enc["input_ids"] == self.image_token_id).sum())
        if found != sum(counts):
            raise RuntimeError(f"{found} image tokens in the prompt, the model packs {n} x {counts[0]}")
        enc["pixel_values"] = pix["pixel_values"].to(self.dtype)
        enc["image_sizes"] = pix["image_sizes"]
        enc["batch_num_images"] = torch.tensor([n], dtype=torch.long)
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
        """One forward pass over (image, text), keeping the cache; the map uses the local grid's tokens."""
        enc, expanded = self._encode([image], [self.chat_text(text)])
        input_ids = enc["input_ids"][0]
        hooks, keys = [], []
        if keys_norope:
            for layer in self._decoder_layers():
                hooks.append(layer.self_attn.k_proj.register_forward_hook(lambda _m, _i, o: keys.append(o)))
        release = None
        try:
            if self.image_cache is not None and not keys_norope:
                run = self.image_cache.run(self.model, enc, image, self.image_token_id)
                out, release = run.out, run.release
                if run.hit:
                    self.counter.add_reuse(run.reused_tokens)
            else:
                out = self.model(**enc, use_cache=True, logits_to_keep=1)
        finally:
            for h in hooks:
                h.remove()
        self.counter.add(1, int(enc["attention_mask"].sum()))
        n = input_ids.shape[0]
        values = [cache_values(out.past_key_values, i)[0].float().clone() for i in range(self.num_layers)]  # (H, N, D)
        if release is not None:
            release()
        if values[0].shape[-2] != n:
            raise RuntimeError(f"cache holds {values[0].shape[-2]} positions, prompt has {n}: sliding-window layer?")
        grid = self.grid_for(image.size)
        image_pos = torch.nonzero(input_ids == self.image_token_id).flatten()  # (n_base + h (w + 1),)
        n_base = self.side * self.side
        if len(image_pos) != n_base + grid.rows * (grid.cols + 1):
            raise RuntimeError(
                f"expected {n_base} + {grid.rows} x ({grid.cols} + 1) image tokens, found {len(image_pos)}"
            )
        local = image_pos[n_base:].view(grid.rows, grid.cols + 1)[:, : grid.cols]  # (h, w): newline column dropped
        tpos = target_positions(self.tokenizer, expanded[0], target, input_ids.cpu())
        yes, no = self.yes_no_ids()
        logits = out.logits[0, -1].float()
        keys_out = None
        if keys_norope:
            d = values[0].shape[-1]
            keys_out = [k[0].float().view(n, -1, d).transpose(0, 1) for k in keys]  # (H_kv, N, D)
        return Prefill(
            values, input_ids.cpu(), local.flatten().tolist(), tpos, grid, float(logits[yes] - logits[no]), keys_out
        )

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
        """Greedy reply to one user turn of images and text lines (in order, as far as the template keeps it).

        With several images each is one base view of ``side^2 + 1`` tokens (module docstring). Counts one pass.
        """
        images, prompt = self._interleaved_prompt(parts)
        return self._greedy(self._encode_interleaved(images, prompt), max_new_tokens)

    def _interleaved_prompt(self, parts: Sequence[Image.Image | str]) -> tuple[list[Image.Image], str]:
        """The images of ``parts`` and the templated prompt of the turn (warns once if the template reorders it)."""
        images = [p for p in parts if isinstance(p, Image.Image)]
        content = [{"type": "image"} if isinstance(p, Image.Image) else {"type": "text", "text": p} for p in parts]
        prompt = self._render(content)
        if len(images) > 1 and not self._order_logged:
            self._order_logged = True
            order = [None if isinstance(p, Image.Image) else p for p in parts]
            if not keeps_content_order(prompt, order, self.image_token):
                logger.warning(
                    "%s: the chat template renders all images before the text; the multi-image answer prompt "
                    "lists its captions after the images instead of interleaving them",
                    self.model_id,
                )
        return images, prompt

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
        counted as K). One image: the anyres path; several: one base view each, as in :meth:`generate_interleaved`.
        """
        prompt = self.chat_text(text, n_images=len(images))
        return self._option_scores(list(images), prompt, options)

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
