r"""InternVL3 adapter (``InternVLForConditionalGeneration``, e.g. OpenGVLab/InternVL3-8B-hf).

Loading without torchvision: the stock ``InternVLProcessor`` needs a video processor (torchvision) in transformers
5.x, so this adapter loads ``AutoImageProcessor`` (``GotOcr2ImageProcessorPil`` when torchvision is absent; the hub
config names ``GotOcr2ImageProcessorFast``) and ``AutoTokenizer`` and does the processor's jobs itself: it tiles with
``crop_to_patches=True`` (the processor's default images kwarg; the hub ``preprocessor_config.json`` says ``false``)
and replaces each ``<IMG_CONTEXT>`` the chat template writes by ``<img>`` + ``image_seq_length * num_patches``
``<IMG_CONTEXT>`` + ``</img>`` [hf: ``InternVLProcessor.replace_image_token``].

Token layout of one image [hf: ``GotOcr2ImageProcessorPil.crop_image_to_patches``, ``InternVLModel``]::

    <img> [tile (0, 0)] [tile (0, 1)] ... [tile (rows-1, cols-1)] [thumbnail] </img>

- **Tile grid.** ``get_optimal_tiled_canvas`` picks (cols, rows) with min_patches <= cols * rows <= max_patches
  (1..12) whose aspect ratio is closest to the image's; the whole image is **resized (stretched) to
  cols*448 x rows*448** and cut into 448-px tiles, row-major. With more than one tile a thumbnail (the whole image
  resized to 448 x 448) is appended last; a 1 x 1 grid has no thumbnail.
- **Per tile.** InternViT sees 32 x 32 patches of 14 px (+ a CLS token, dropped: ``vision_feature_select_strategy
  = "default"``); ``pixel_shuffle(0.5)`` folds each 2 x 2 block of patches into one feature, so a tile gives 16 x 16
  = 256 tokens, row-major, each covering 28 x 28 px of the tile (checked against the model's own ``pixel_shuffle`` in
  the tests). The MLP projector maps each feature to one ``<IMG_CONTEXT>`` embedding.

Geometry: every view is a :class:`~focus_tool.grid.PatchGrid` (:meth:`InternVLAdapter.views`): tile (r, c) spans
image pixels [c W / cols, (c + 1) W / cols) x [r H / rows, (r + 1) H / rows) (the stretch is exact at tile borders),
the thumbnail spans the whole image. The relevance map is the tiles stitched together, (rows * 16) x (cols * 16)
cells over the whole image (``PatchGrid.stretched``); the thumbnail's tokens are not map cells (like OneVision's base
view, paper §3.2) but stay in the similarity row sums. :meth:`InternVLAdapter.token_boxes` gives every image token's
pixel box, thumbnail included.

Cached values: the language model is Qwen2.5 (1-D RoPE on queries and keys only, GQA), so the cached values of the image
tokens are ``v_proj`` of their layer input, per KV head, with no position term; the map reads them per KV head as stored
(docs/method.md, Stage III). The encoded-image prefix cache is reused (``supports_image_cache``): positions of the text
after ``</img>`` follow from the cache length, and the prefix up to the last ``<IMG_CONTEXT>`` depends only on the image
and the template.

Answer step (docs/method.md, Stage VI; ``answer_mode = "multi"``): the checkpoint's template renders content items in
order (image -> ``<IMG_CONTEXT>\n``); each image of a several-image turn is tiled on its own, as the stock processor
does, and ``pixel_values`` holds all tiles of all images in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from focus_tool.adapters.common import expand_image_tokens
from focus_tool.adapters.views import TiledAdapter
from focus_tool.errors import ModelLoadError

_FALLBACK_OPEN, _FALLBACK_CLOSE = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"  # the hf template


class InternVLAdapter(TiledAdapter):
    """Adapter for ``InternVLForConditionalGeneration`` checkpoints (dynamic 448-px tiles; multi-image answer)."""

    preset_name = "internvl"
    answer_mode = "multi"
    supports_image_cache = True  # 1-D RoPE: positions of the text after the image follow from the cache length
    family = "InternVL"
    model_class_name = "InternVLForConditionalGeneration"
    image_count_source = "the processor's num_patches x image_seq_length"
    overview_kind = "thumbnail"

    def _configure(self) -> None:
        """Tile size, patch, pixel shuffle and tiling limits from the config and image processor, checked."""
        ip = self.image_processor
        if not all(hasattr(ip, k) for k in ("crop_to_patches", "min_patches", "max_patches")):
            raise ModelLoadError(
                f"{type(ip).__name__} is not the GotOcr2 tiling image processor InternVL3 uses; "
                "use a checkpoint whose preprocessor_config.json names GotOcr2ImageProcessor(Fast)"
            )
        cfg = self.model.config
        vision = cfg.vision_config
        size = dict(ip.size)
        self.tile_px: int = int(size.get("height") or 0)  # 448
        self.patch_px: int = int(_first(vision.patch_size))  # 14
        self.shuffle: int = round(1 / float(cfg.downsample_ratio))  # 2: pixel shuffle 0.5 folds 2 x 2 patches
        self.side: int = self.tile_px // self.patch_px // self.shuffle  # 16 tokens per tile side
        self.min_patches: int = int(ip.min_patches)  # 1
        self.max_patches: int = int(ip.max_patches)  # 12
        self.start_token: str = str(getattr(self.tokenizer, "start_image_token", None) or "<img>")
        self.end_token: str = str(getattr(self.tokenizer, "end_image_token", None) or "</img>")
        self._check_consistency(size, _first(vision.image_size))

    def _check_consistency(self, size: dict[str, Any], vision_px: int) -> None:
        """The image processor must tile at the vision tower's resolution and the token counts must agree."""
        cfg = self.model.config
        self._require_square_input(size, self.tile_px, vision_px, verb="tiles at")
        if cfg.vision_feature_select_strategy != "default":
            raise ModelLoadError(
                f"vision_feature_select_strategy={cfg.vision_feature_select_strategy!r} is not supported; InternViT "
                "has a CLS token, so the checkpoint must use 'default'"
            )
        if (self.tile_px // self.patch_px) % self.shuffle or self.side < 1:
            raise ModelLoadError(f"{self.tile_px}-px tiles of {self.patch_px}-px patches cannot be pixel-shuffled")
        if self.side**2 != int(cfg.image_seq_length):
            raise ModelLoadError(
                f"image_seq_length {cfg.image_seq_length} in config.json differs from the {self.side**2} tokens a "
                f"{self.tile_px}-px tile gives"
            )
        self._require_tokens(self.start_token, self.end_token)

    # ------------------------------------------------------------------ geometry

    def tile_grid(self, image_wh: tuple[int, int]) -> tuple[int, int]:
        """(cols, rows) of the tile grid the processor picks for an image of ``image_wh`` (its own helper)."""
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

        if self.max_patches <= 1:  # the processor does not tile at all
            return 1, 1
        w, h = image_wh
        tile = (self.tile_px, self.tile_px)
        cols, rows = get_optimal_tiled_canvas((h, w), tile, self.min_patches, self.max_patches)
        return int(cols), int(rows)

    def _has_overview(self, n_tiles: int) -> bool:
        """The thumbnail follows the tiles when there is more than one."""
        return n_tiles > 1

    # ------------------------------------------------------------------ prompts

    def _render(self, content: list[dict[str, str]]) -> str:
        """The templated turn with each ``<IMG_CONTEXT>`` wrapped in ``<img>`` ... ``</img>`` (as the processor does;
        the run is expanded to the image's token count later).
        """
        prompt = super()._render(content)
        return prompt.replace(self.image_token, self.start_token + self.image_token + self.end_token)

    def _fallback_prompt(self, content: list[dict[str, str]]) -> str:
        r"""The hf template's ChatML layout, items in order: an image as ``<IMG_CONTEXT>\n``, text as is."""
        body = "".join(self.image_token + "\n" if c["type"] == "image" else c["text"] for c in content)
        return _FALLBACK_OPEN + body + _FALLBACK_CLOSE

    def _interleaved_text(self, parts: Sequence[Image.Image | str], i: int) -> str:
        r"""Each image is followed by a line break (the template's); a text line is preceded by one when it follows
        text and followed by one when an image comes next, so ``[img, "a", img, "b", "q"]`` renders as
        ``<img>..</img>\na\n<img>..</img>\nb\nq``.
        """
        after_text = i > 0 and isinstance(parts[i - 1], str)
        before_image = i + 1 < len(parts) and isinstance(parts[i + 1], Image.Image)
        return ("\n" if after_text else "") + str(parts[i]) + ("\n" if before_image else "")

    # ------------------------------------------------------------------ encoding

    def _pixel_inputs(self, images: Sequence[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """All tiles of ``images`` (each tiled on its own) and each image's ``<IMG_CONTEXT>`` count.

        ``pixel_values``: (sum_i num_patches_i, 3, tile, tile), image by image, tiles row-major then the thumbnail.
        """
        rgb = [im.convert("RGB") for im in images]
        pix = self.image_processor(images=rgb, crop_to_patches=True, return_tensors="pt")
        num_patches = [int(n) for n in pix["num_patches"]]
        expected = [len(self.views(im.size)) for im in rgb]
        if num_patches != expected:
            raise RuntimeError(f"the processor made {num_patches} tiles per image, the tile grid says {expected}")
        counts = [n * self.side**2 for n in num_patches]
        return {"pixel_values": pix["pixel_values"].to(self.dtype)}, counts

    def _encode_interleaved(self, images: Sequence[Image.Image], prompt: str) -> Any:
        """One prompt holding ``len(images)`` ``<img>`` blocks, in order; each block gets its own image's count."""
        pixels: dict[str, torch.Tensor]
        pixels, counts = self._pixel_inputs(images) if images else ({}, [])
        enc = self.tokenizer([expand_image_tokens(prompt, self.image_token, counts)], return_tensors="pt")
        ids = enc["input_ids"][0]
        starts = torch.nonzero(ids == self.tokenizer.convert_tokens_to_ids(self.start_token)).flatten().tolist()
        ends = torch.nonzero(ids == self.tokenizer.convert_tokens_to_ids(self.end_token)).flatten().tolist()
        blocks = [int((ids[a:b] == self.image_token_id).sum()) for a, b in zip(starts, ends, strict=False)]
        if blocks != counts or int((ids == self.image_token_id).sum()) != sum(counts):
            raise RuntimeError(f"<img> blocks of {blocks} image tokens differ from the processor's counts {counts}")
        enc.update(pixels)
        return enc.to(self.device)


def _first(value: Any) -> int:
    """The first entry of a (height, width) pair, or the value itself (InternVL configs store both forms)."""
    return int(value[0]) if isinstance(value, (list, tuple)) else int(value)
