r"""Gemma 3 adapter (``Gemma3ForConditionalGeneration``, e.g. google/gemma-3-4b-it, -12b-it, -27b-it).

Loading without torchvision: the stock ``Gemma3Processor`` is an ordinary ``ProcessorMixin``, but this adapter does
its one job itself, as the other adapters do: it loads ``AutoImageProcessor`` (``Gemma3ImageProcessorPil`` when
torchvision is absent; the hub config names ``Gemma3ImageProcessor``) and ``AutoTokenizer`` (``GemmaTokenizer``, a
SentencePiece-style BPE with byte fallback that prepends ``<bos>``) and replaces each ``<start_of_image>`` the chat
template writes by the processor's image sequence [hf: ``Gemma3Processor.replace_image_token``]::

    \n\n<start_of_image> <image_soft_token> x 256 <end_of_image>\n\n

Geometry [hf: ``Gemma3ImageProcessorPil``, ``Gemma3MultiModalProjector``]: the image is **resized to a square**
(896 x 896 on the hub checkpoints, bilinear, no padding, no crop: the aspect ratio is not kept), SigLIP sees 64 x 64
patches of 14 px, and the projector average-pools them 4 x 4 into a 16 x 16 grid of 256 soft tokens, row-major
(``flatten(2)`` of the pooled (rows, cols) map). The grid therefore spans the whole, stretched image: a token covers
W / 16 x H / 16 image pixels (``PatchGrid.stretched``; tested with a marker against the processor's own pixels).

Pan-and-scan (``do_pan_and_scan``; off in the hub ``preprocessor_config.json``, where it and its settings are null):
when the aspect ratio reaches ``pan_and_scan_min_ratio_to_activate`` the processor also cuts the image into 2..4
crops along its long side (each at least ``pan_and_scan_min_crop_size`` px) and resizes each to its own 896-px square;
the prompt then reads ``Here is the original image <seq> and here are some crops to help you see better <seq> <seq>``.
Every view is a :class:`~focus_tool.grid.PatchGrid` (:meth:`Gemma3Adapter.views`; the crop boxes come from the
processor's own ``pan_and_scan``); :meth:`Gemma3Adapter.token_boxes` gives every soft token's pixel box. The relevance
map is the **original view's** 16 x 16 grid; the crops' tokens are not map cells (their last crop can be narrower than
the others, so stitched crops would not form one uniform grid) but stay in the similarity row sums. When the
settings are null, the processor's defaults are used (256 px, 4 crops, ratio 1.2), as ``Gemma3Processor`` does.

Attention among image tokens: with ``token_type_ids`` (1 on soft tokens; :meth:`Gemma3Adapter._token_inputs`) the
mask lets the tokens of one image block attend to each other **bidirectionally** (global layers: causal OR same
block; sliding layers: that AND the window). Without them the model silently runs a causal mask and its outputs
change, so every encode passes them. Nothing before the end of an image block ever sees a later token.

Cached values: the LM is Gemma 3 (q/k RMSNorm and RoPE on queries and keys only; no norm on values; GQA), so the cached
value of a token is ``v_proj(input_layernorm(h))`` per KV head, with no position term; the map reads them per KV head as
stored (docs/method.md, Stage III). Bidirectional attention changes what the image tokens' layer inputs contain (each
has seen the whole image from layer 1 on), not how the values are read. (The K-K ablation's "pre-RoPE keys" are the
base's ``k_proj`` outputs, here also before ``k_norm``.)

Sliding-window layers: 5 of every 6 layers attend within 1024 positions, and transformers' default cache keeps only
the last ``sliding_window - 1`` positions of those layers. The prefill therefore runs with a plain ``DynamicCache``
that keeps every position of every layer (:meth:`Gemma3Adapter._prefill_forward`); the attention masks are built
from the config's window, so the computation is unchanged (tested: same logits, and the cache equals the hooked
values on a prompt longer than the window). A one-image prompt (~300 tokens) is inside the window, so there every
layer sees the whole prompt; only pan-and-scan prompts (up to ~1,330 tokens) exceed it.

Encoded-image prefix cache (``supports_image_cache``): reusable. The prefix up to the last soft token depends only on
the image and the template (bidirectional attention stays inside the block), and the text after it takes 1-D
positions from the cache length. The prefix forward must get ``token_type_ids`` of the prefix only, so the adapter
cuts them there (the image-prefix cache passes every other input to the prefix as is).

Answer step (docs/method.md, Stage VI; ``answer_mode = "multi"``): Gemma 3 takes several images in one turn, in order;
the template trims each text item, so the adapter joins consecutive text lines with a line break.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from focus_tool.adapters.prefix_cache import cache_kwargs
from focus_tool.adapters.views import MultiViewAdapter
from focus_tool.errors import ModelLoadError
from focus_tool.grid import PatchGrid

_FALLBACK_OPEN, _FALLBACK_CLOSE = "<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n"  # the hub template
# Gemma3Processor.images_kwargs: what the processor uses when preprocessor_config.json leaves them null
_PAS_DEFAULTS = {
    "pan_and_scan_min_crop_size": 256,
    "pan_and_scan_max_num_crops": 4,
    "pan_and_scan_min_ratio_to_activate": 1.2,
}
_PAS_INTRO = "Here is the original image {} and here are some crops to help you see better "  # replace_image_token


@dataclass(frozen=True)
class ImageView:
    """One view of an image: the whole image or a pan-and-scan crop, each resized to one square.

    Attributes:
        kind: "image" (the original, first) or "crop".
        token_start: index of the view's first soft token among the image's soft tokens.
        grid: the view's ``side x side`` token grid over its box of image pixels (stretched to the square).
    """

    kind: Literal["image", "crop"]
    token_start: int
    grid: PatchGrid


class Gemma3Adapter(MultiViewAdapter):
    """Adapter for ``Gemma3ForConditionalGeneration`` checkpoints (896-px square view, optional pan-and-scan crops)."""

    preset_name = "gemma3"
    answer_mode = "multi"
    supports_image_cache = True  # the prefix up to the last soft token is question-independent; 1-D positions
    family = "Gemma 3"
    model_class_name = "Gemma3ForConditionalGeneration"
    image_count_source = "the processor's views x mm_tokens_per_image"

    def _configure(self) -> None:
        """Square size, patch and pooling from the config and image processor, the image tags, pan-and-scan."""
        cfg = self.model.config
        vision = cfg.vision_config
        size = dict(self.image_processor.size)
        self.image_px: int = int(size.get("height") or 0)  # 896
        self.patch_px: int = int(vision.patch_size)  # 14
        self.side: int = math.isqrt(int(cfg.mm_tokens_per_image))  # 16 soft tokens per side
        self.pool: int = int(vision.image_size) // self.patch_px // max(self.side, 1)  # 4: 64 patches -> 16 tokens
        self.boi_token: str = str(getattr(self.tokenizer, "boi_token", None) or "<start_of_image>")
        self.eoi_token: str = str(getattr(self.tokenizer, "eoi_token", None) or "<end_of_image>")
        self.pan_and_scan: dict[str, Any] | None = self._pan_and_scan_settings()
        self._check_consistency(size, int(vision.image_size))
        self._adds_bos = bool(self.tokenizer("")["input_ids"][:1] == [self.tokenizer.bos_token_id])

    def _pan_and_scan_settings(self) -> dict[str, Any] | None:
        """The pan-and-scan keyword arguments of the image processor (null settings -> the processor's defaults),
        or None when pan-and-scan is off.
        """
        ip = self.image_processor
        if not getattr(ip, "do_pan_and_scan", None):
            return None
        out: dict[str, Any] = {"do_pan_and_scan": True}
        for key, default in _PAS_DEFAULTS.items():
            value = getattr(ip, key, None)
            out[key] = default if value is None else value
        return out

    def _check_consistency(self, size: dict[str, Any], vision_px: int) -> None:
        """The image processor must resize to the vision tower's square and the soft-token count must pool evenly."""
        cfg = self.model.config
        self._require_square_input(size, self.image_px, vision_px, verb="resizes to")
        patches = vision_px // self.patch_px
        if self.side < 1 or self.side**2 != int(cfg.mm_tokens_per_image) or patches % self.side:
            raise ModelLoadError(
                f"mm_tokens_per_image {cfg.mm_tokens_per_image} in config.json does not pool the {patches} x "
                f"{patches} patch grid into a square grid"
            )
        self._require_tokens(self.boi_token, self.eoi_token)

    # ------------------------------------------------------------------ geometry

    def crop_boxes(self, image_wh: tuple[int, int]) -> list[tuple[int, int, int, int]]:
        """Pan-and-scan crop boxes ``(x0, y0, x1, y1)`` in image pixels, in the processor's order (none when off).

        Read from the processor's own ``pan_and_scan`` run on two zero-copy index images (row and column numbers).
        """
        if self.pan_and_scan is None:
            return []
        w, h = image_wh
        kwargs = {k: v for k, v in self.pan_and_scan.items() if k != "do_pan_and_scan"}
        ys, xs = np.arange(h), np.arange(w)
        rows = np.lib.stride_tricks.as_strided(ys, shape=(1, h, w), strides=(0, ys.strides[0], 0))  # (1, H, W): y
        cols = np.lib.stride_tricks.as_strided(xs, shape=(1, h, w), strides=(0, 0, xs.strides[0]))  # (1, H, W): x
        by_row = self.image_processor.pan_and_scan(rows, **kwargs)
        by_col = self.image_processor.pan_and_scan(cols, **kwargs)
        out = []
        for r, c in zip(by_row, by_col, strict=True):
            y0, x0 = int(r[0, 0, 0]), int(c[0, 0, 0])
            out.append((x0, y0, x0 + int(c.shape[2]), y0 + int(r.shape[1])))
        return out

    def views(self, image_wh: tuple[int, int]) -> list[ImageView]:
        """Every view of the image in token order: the whole image, then the pan-and-scan crops (if any)."""
        n = self.side**2
        square = (self.image_px, self.image_px)
        out = [ImageView("image", 0, PatchGrid.stretched(image_wh, self.side, self.side, square))]
        for i, (x0, y0, x1, y1) in enumerate(self.crop_boxes(image_wh)):
            grid = PatchGrid(image_wh, (float(x0), float(y0), float(x1), float(y1)), self.side, self.side, square)
            out.append(ImageView("crop", (i + 1) * n, grid))
        return out

    @property
    def encoder_px(self) -> int:
        """The square view side the vision tower takes (896 on the hub checkpoints)."""
        return self.image_px

    def grid_for(self, image_wh: tuple[int, int]) -> PatchGrid:
        """The original view's side x side grid over the whole (stretched) image; crops are not map cells."""
        return PatchGrid.stretched(image_wh, self.side, self.side, (self.image_px, self.image_px))

    # ------------------------------------------------------------------ prompts

    def _render(self, content: list[dict[str, str]]) -> str:
        """The templated turn without the template's leading ``<bos>`` when the tokenizer prepends one itself (the
        stock processor tokenises the rendered template without adding specials: one ``<bos>`` either way).
        """
        prompt = super()._render(content)
        bos = self.tokenizer.bos_token
        if self._adds_bos and bos and prompt.startswith(bos):
            prompt = prompt[len(bos) :]
        return prompt

    def _fallback_prompt(self, content: list[dict[str, str]]) -> str:
        """The hub template's layout, items in order: an image as ``<start_of_image>``, text trimmed; ``<bos>`` first
        only when the tokenizer does not prepend it.
        """
        body = "".join(self.boi_token if c["type"] == "image" else c["text"].strip() for c in content)
        bos = "" if self._adds_bos else str(self.tokenizer.bos_token or "")
        return bos + _FALLBACK_OPEN + body + _FALLBACK_CLOSE

    def _interleaved_prompt(self, parts: Sequence[Image.Image | str]) -> tuple[list[Image.Image], str]:
        r"""The images of ``parts`` and the templated turn, in order; consecutive text lines are joined by a line
        break (the template trims every text item), so ``[img, "a", img, "b", "q"]`` renders as
        ``<img seq>a<img seq>b\nq`` with the image sequences' own blank lines around each image.
        """
        images = [p for p in parts if isinstance(p, Image.Image)]
        content: list[dict[str, str]] = []
        for part in parts:
            if isinstance(part, Image.Image):
                content.append({"type": "image"})
            elif content and content[-1]["type"] == "text":
                content[-1] = {"type": "text", "text": content[-1]["text"] + "\n" + part}
            else:
                content.append({"type": "text", "text": part})
        return images, self._render(content)

    def _image_sequence(self, n_crops: int) -> str:
        """The text the processor puts in place of one ``<start_of_image>``, soft tokens expanded."""
        one = f"\n\n{self.boi_token}{self.image_token * self.side**2}{self.eoi_token}\n\n"
        if not n_crops:
            return one
        return _PAS_INTRO.format(one) + " ".join([one] * n_crops)

    # ------------------------------------------------------------------ encoding

    def _pixel_inputs(self, images: Sequence[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """All views of ``images`` and each image's soft-token count (views x side^2).

        ``pixel_values``: (sum_i views_i, 3, px, px), image by image: the whole image, then its crops.
        """
        rgb = [im.convert("RGB") for im in images]
        pas = self.pan_and_scan or {"do_pan_and_scan": False}
        pix = self.image_processor(images=rgb, return_tensors="pt", **pas)
        crops = [int(n) for n in pix["num_crops"]]
        expected = [len(self.views(im.size)) - 1 for im in rgb]
        if crops != expected:
            raise RuntimeError(f"the processor made {crops} crops per image, the pan-and-scan boxes say {expected}")
        counts = [(1 + n) * self.side**2 for n in crops]
        return {"pixel_values": pix["pixel_values"].to(self.dtype)}, counts

    def _token_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """``token_type_ids``: (B, N), 1 on soft tokens (the bidirectional image blocks), else 0."""
        return {"token_type_ids": (input_ids == self.image_token_id).long()}

    def _image_placeholder(self) -> str:
        """The chat template writes ``<start_of_image>`` for each image."""
        return self.boi_token

    def _image_text(self, image: Image.Image, n_tokens: int) -> str:
        """The image's sequence (:meth:`_image_sequence`), its crops included: ``n_tokens / side^2 - 1`` of them."""
        return self._image_sequence(n_tokens // self.side**2 - 1)

    # ------------------------------------------------------------------ model calls

    def _prefill_forward(
        self, enc: Any, image: Image.Image, *, keys_norope: bool
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, float]:
        """The base prefill with a cache that keeps every position of the sliding-window layers.

        ``DynamicCache()`` without a config holds full layers; the masks still apply the config's window, so the
        logits are those of the default cache. Through the image-prefix cache, ``token_type_ids`` are cut to the
        prefix (the image blocks all lie in it; the suffix is text under the causal mask).
        """
        from transformers import DynamicCache

        inputs = dict(enc)
        inputs.update(cache_kwargs(self.model, DynamicCache()))
        if self.image_cache is not None and not keys_norope:
            cut = int(torch.nonzero(inputs["input_ids"][0] == self.image_token_id).flatten()[-1]) + 1
            inputs["token_type_ids"] = inputs["token_type_ids"][:, :cut]
        return super()._prefill_forward(inputs, image, keys_norope=keys_norope)

    # ------------------------------------------------------------------ token layout of a prefill

    def _map_positions(self, enc: Any, image_wh: tuple[int, int]) -> tuple[list[int], PatchGrid]:
        """The original view's soft tokens, row-major over its side x side grid, and that grid (no crop tokens)."""
        return self._image_positions(enc, image_wh)[: self.side**2].tolist(), self.grid_for(image_wh)
