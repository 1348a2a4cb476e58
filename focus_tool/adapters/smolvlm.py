r"""SmolVLM adapter (Idefics3 family): ``SmolVLMForConditionalGeneration`` (model_type ``smolvlm``, e.g.
HuggingFaceTB/SmolVLM2-2.2B-Instruct, SmolVLM2-256M-Video-Instruct) and ``Idefics3ForConditionalGeneration``
(model_type ``idefics3``: the SmolVLM v1 checkpoints HuggingFaceTB/SmolVLM-256M-Instruct, -500M-Instruct, -Instruct).

Both classes are the same model [hf: ``modular_smolvlm.py`` derives SmolVLM from Idefics3]: a SigLIP tower, a pixel
shuffle + linear connector and a Llama-architecture LM (SmolLM2), ``model.model.text_model``; their image processors
and prompt layouts are the same code. The v1 checkpoints, which a CPU user runs, are ``idefics3`` on the hub, so both
model types map here (:class:`Idefics3Adapter` only names the other model class).

Loading without torchvision: the stock ``SmolVLMProcessor`` needs a video processor (torchvision) and ``num2words``.
This adapter loads ``AutoImageProcessor`` (``SmolVLMImageProcessorPil`` / ``Idefics3ImageProcessorPil`` when
torchvision is absent) and ``AutoTokenizer`` (SmolLM2's byte-level BPE, ``GPT2Tokenizer``) and does the processor's
job itself: each ``<image>`` the chat template writes becomes the processor's image string, built by transformers'
own ``get_image_prompt_string`` [hf: ``processing_smolvlm``; ``Idefics3Processor.replace_image_token`` is the same]::

    <fake_token_around_image><row_1_col_1><image>*n ... <fake_token_around_image><row_1_col_C><image>*n \n
    ...
    <fake_token_around_image><row_R_col_1><image>*n ... <fake_token_around_image><row_R_col_C><image>*n \n
    \n<fake_token_around_image><global-img><image>*n<fake_token_around_image>

(an image that is not split: ``<fake_token_around_image><global-img><image>*n<fake_token_around_image>``).

Geometry [hf: ``SmolVLMImageProcessorPil._preprocess``, ``resize``, ``resize_for_vision_encoder``, ``split_images``]:

- **Resize.** The long side is resized to ``size["longest_edge"]`` (2048 = 4 x 512 on the 256M / 500M, up *or*
  down; the short side follows the aspect ratio, made even), then each side is rounded **up** to a multiple of the
  tile size ``max_image_size["longest_edge"]`` (512; 384 on the 2.2B models). The two resizes are whole-image
  stretches, so the canvas is the image stretched to (C x tile) x (R x tile): no padding, no crop.
- **Tiles.** The canvas is cut into R x C tiles, row-major, followed by a **global image**: the canvas resized to one
  tile. A canvas of one tile is not split (only the global image; ``rows = cols = 0`` in the processor's metadata).
- **Per tile.** SigLIP sees (tile / patch)^2 patches (32 x 32 of 16 px on the 256M / 500M; 27 x 27 of 14 px on the
  2.2B); the connector's ``pixel_shuffle(scale_factor)`` folds each ``scale x scale`` block of patches into one
  feature (4 x 4 -> 8 x 8 = 64 tokens per tile on the 256M / 500M; 3 x 3 -> 9 x 9 = 81 on the 2.2B), row-major
  (checked against the model's own ``pixel_shuffle`` in the tests), and a linear projection makes it one ``<image>``.

Every view is a :class:`~focus_tool.grid.PatchGrid` (:meth:`SmolVLMAdapter.views`): tile (r, c) spans image pixels
[c W / C, (c + 1) W / C) x [r H / R, (r + 1) H / R), the global image the whole image. The relevance map is the tiles
stitched together, (R side) x (C side) cells over the whole image (``PatchGrid.stretched``); the global image's
tokens are not map cells (like OneVision's base view, paper Sec. 3.2) but stay in the similarity row sums, and the
``<fake_token_around_image>``, ``<row_r_col_c>``, ``<global-img>`` and line-break tokens are not image tokens at all
(the map is read at the ``<image>`` positions only; SmolVLM-Instruct's tokenizer has no row / column / global
specials, so there those tags are plain text tokens, as the stock processor writes them).
:meth:`SmolVLMAdapter.token_boxes` gives every ``<image>`` token's pixel box, global image included.

Cached values: the LM is Llama-architecture (1-D RoPE on queries and keys only, GQA: 9 query / 3 KV heads on the 256M),
so the cached value of an image token is ``v_proj(input_layernorm(h))`` of its layer input, per KV head, with no
position term; the map reads them per KV head as stored (docs/method.md, Stage III). Attention is causal over the whole
sequence (image tokens included), so an image token's value depends on the tokens before it only.

Encoded-image prefix cache (``supports_image_cache``): reusable. The prefix up to the last ``<image>`` depends only
on the image and the template; the suffix (``<fake_token_around_image>`` and the question) is text whose 1-D
positions follow from the cache length, and it needs no pixel inputs.

Answer step (docs/method.md, Stage VI; ``answer_mode = "multi"``): the template renders content items in order with
nothing between them, so the adapter puts a line break after a text line that an image or another line follows. Each
image of a several-image turn is split on its own, as the stock processor does; ``pixel_values`` holds one row of tiles
per image (zero-padded tiles, which the model drops, fill the shorter rows), in the order of the turn. (The stock
processor puts a turn's images in one row; the model flattens both to the same tile sequence, and a row per image keeps
the forward counter's image count right.) The template ends with ``Assistant:`` and the checkpoints reply with a leading
space, so the Yes / No ids are those of `` Yes`` / `` No`` (``reply_separator``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from focus_tool.adapters.views import TiledAdapter
from focus_tool.errors import ModelLoadError

_FALLBACK_OPEN, _FALLBACK_CLOSE = "<|im_start|>User", "<end_of_utterance>\nAssistant:"  # the hub template's layout
_MAX_IMAGE_SIZE = 4096  # the processor's absolute cap on the resized long side [hf: MAX_IMAGE_SIZE]


def resized_canvas_wh(
    image_wh: tuple[int, int], *, longest_edge: int | None, tile_px: int, split: bool
) -> tuple[int, int]:
    """(w, h) px of the canvas the processor cuts into tiles: the long side resized to ``longest_edge`` (None: no
    resize), then each side rounded up to a multiple of ``tile_px``; (tile_px, tile_px) without splitting.

    Mirrors the processor's integer arithmetic [hf: ``_resize_output_size_rescale_to_max_len``,
    ``_resize_output_size_scale_below_upper_bound``, ``resize_for_vision_encoder``]; the tests check it against the
    processor's own rows / cols for many sizes.
    """
    w, h = image_wh
    if not split:
        return tile_px, tile_px
    if longest_edge is not None:
        aspect = w / h
        if w >= h:
            w = longest_edge
            h = int(w / aspect)
            h += h % 2
        else:
            h = longest_edge
            w = int(h * aspect)
            w += w % 2
        h, w = max(h, 1), max(w, 1)
        if w >= h and w > _MAX_IMAGE_SIZE:
            w, h = _MAX_IMAGE_SIZE, int(_MAX_IMAGE_SIZE / aspect)
        elif h > w and h > _MAX_IMAGE_SIZE:
            h, w = _MAX_IMAGE_SIZE, int(_MAX_IMAGE_SIZE * aspect)
        h, w = max(h, 1), max(w, 1)
    aspect = w / h
    if w >= h:
        w = math.ceil(w / tile_px) * tile_px
        h = math.ceil(int(w / aspect) / tile_px) * tile_px
    else:
        h = math.ceil(h / tile_px) * tile_px
        w = math.ceil(int(h * aspect) / tile_px) * tile_px
    return w, h


class SmolVLMAdapter(TiledAdapter):
    """Adapter for ``SmolVLMForConditionalGeneration`` checkpoints (tiles + global image; multi-image answer)."""

    preset_name = "smolvlm"
    answer_mode = "multi"
    supports_image_cache = True  # 1-D RoPE: positions of the text after the image follow from the cache length
    family = "SmolVLM"
    model_class_name = "SmolVLMForConditionalGeneration"
    image_count_source = "the processor's tiles (+ global image) x image_seq_len"
    reply_separator = " "  # "...Assistant:" then " Yes" (the checkpoints reply with a leading space)
    overview_kind = "global"  # after the tiles, always

    def _configure(self) -> None:
        """Tile size, patch, pixel shuffle, splitting and resize settings and the layout tokens, checked."""
        image_processor, tokenizer = self.image_processor, self.tokenizer
        if not all(hasattr(image_processor, k) for k in ("do_image_splitting", "max_image_size", "split_images")):
            raise ModelLoadError(
                f"{type(image_processor).__name__} is not the Idefics3 / SmolVLM image processor; use a checkpoint "
                "whose preprocessor_config.json names SmolVLMImageProcessor or Idefics3ImageProcessor"
            )
        cfg = self.model.config
        vision = cfg.vision_config
        self.tile_px: int = int(dict(image_processor.max_image_size)["longest_edge"])  # 512 (256M / 500M)
        self.patch_px: int = int(vision.patch_size)  # 16
        self.shuffle: int = int(cfg.scale_factor)  # 4: pixel shuffle folds 4 x 4 patches into one token
        self.side: int = self.tile_px // self.patch_px // self.shuffle  # 8 tokens per tile side
        self.split: bool = bool(image_processor.do_image_splitting)
        size = dict(image_processor.size or {})
        if image_processor.do_resize and size.get("longest_edge") is None:
            raise ModelLoadError(
                f"the image processor's size {size} has no longest_edge; use the checkpoint's own config"
            )
        self.longest_edge: int | None = int(size["longest_edge"]) if image_processor.do_resize else None  # 2048
        self.fake_token: str = str(getattr(tokenizer, "fake_image_token", None) or "<fake_token_around_image>")
        self.global_token: str = str(getattr(tokenizer, "global_image_token", None) or "<global-img>")
        self._check_consistency(int(vision.image_size))

    def _check_consistency(self, vision_px: int) -> None:
        """Tiles at the tower's resolution, whole pixel-shuffle blocks, ``<image>`` and the fake token in the vocab."""
        if self.tile_px != vision_px:
            raise ModelLoadError(
                f"the image processor cuts {self.tile_px}-px tiles but the vision tower takes {vision_px} px; use the "
                "checkpoint's own preprocessor_config.json"
            )
        if (self.tile_px // self.patch_px) % self.shuffle or self.side < 1:
            raise ModelLoadError(f"{self.tile_px}-px tiles of {self.patch_px}-px patches cannot be pixel-shuffled")
        if self.longest_edge is None and self.split:
            raise ModelLoadError("do_resize=false with image splitting is not supported; set do_resize to true")
        seq = int(getattr(self.model.model, "image_seq_len", self.side**2))
        if seq != self.side**2:
            raise ModelLoadError(f"the model packs {seq} tokens per tile, the processor settings give {self.side**2}")
        self._require_tokens(self.image_token, self.fake_token)  # the row / column / global tags may be plain text

    # ------------------------------------------------------------------ geometry

    def tile_grid(self, image_wh: tuple[int, int]) -> tuple[int, int]:
        """(cols, rows) of the processor's tile grid for an image of ``image_wh``; (0, 0) when it is not split."""
        w, h = resized_canvas_wh(image_wh, longest_edge=self.longest_edge, tile_px=self.tile_px, split=self.split)
        if not self.split or (w <= self.tile_px and h <= self.tile_px):
            return 0, 0
        return w // self.tile_px, h // self.tile_px

    def image_prompt(self, image_wh: tuple[int, int]) -> str:
        """The processor's string for one image (the module docstring's layout), by transformers' own helper."""
        from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

        cols, rows = self.tile_grid(image_wh)
        return str(
            get_image_prompt_string(
                rows,
                cols,
                self.side**2,
                fake_token_around_image=self.fake_token,
                image_token=self.image_token,
                global_image_token=self.global_token,
            )
        )

    # ------------------------------------------------------------------ prompts

    def _fallback_prompt(self, content: list[dict[str, str]]) -> str:
        """The hub template's layout: ``<|im_start|>User:`` (``User: `` before text), items in order, the end."""
        body = "".join(self.image_token if c["type"] == "image" else c["text"] for c in content)
        colon = ":" if content and content[0]["type"] == "image" else ": "
        return _FALLBACK_OPEN + colon + body + _FALLBACK_CLOSE

    def _interleaved_text(self, parts: Sequence[Image.Image | str], i: int) -> str:
        r"""A text line is followed by a line break when anything comes after it, so ``[img, "a", img, "b", "q"]``
        renders as ``<image>a\n<image>b\nq``.
        """
        return str(parts[i]) + ("\n" if i + 1 < len(parts) else "")

    # ------------------------------------------------------------------ encoding

    def _pixel_inputs(self, images: Sequence[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """The tiles of ``images``, one row per image, and each image's ``<image>`` count.

        ``pixel_values``: (n_images, max_views, 3, tile, tile), image by image: tiles row-major, then the global image,
        zero-padded to the longest row (the model drops all-zero tiles); ``pixel_attention_mask``: (n_images,
        max_views, tile, tile). Raises RuntimeError if the processor's rows / cols differ from :meth:`tile_grid`.
        """
        rgb = [im.convert("RGB") for im in images]
        pix = self.image_processor(images=[[im] for im in rgb], return_tensors="pt", return_row_col_info=True)
        got = [(int(c[0]), int(r[0])) for r, c in zip(pix["rows"], pix["cols"], strict=True)]
        expected = [self.tile_grid(im.size) for im in rgb]
        if got != expected:
            raise RuntimeError(f"the processor split the images into {got} (cols, rows), the tile grid says {expected}")
        counts = [self.num_image_tokens(im.size) for im in rgb]
        return {
            "pixel_values": pix["pixel_values"].to(self.dtype),
            "pixel_attention_mask": pix["pixel_attention_mask"],
        }, counts

    def _image_text(self, image: Image.Image, n_tokens: int) -> str:
        """The image's string with its tiles' and global image's tokens (:meth:`image_prompt`)."""
        return self.image_prompt(image.size)

    def _decoder_layers(self) -> Any:
        """SmolLM2's decoder layers: Idefics3-family models keep the LM at ``model.model.text_model``."""
        return self.model.model.text_model.layers


class Idefics3Adapter(SmolVLMAdapter):
    """The SmolVLM v1 checkpoints (SmolVLM-256M / 500M-Instruct, SmolVLM-Instruct): the same model under its
    ``Idefics3ForConditionalGeneration`` class (model_type ``idefics3``).
    """

    model_class_name = "Idefics3ForConditionalGeneration"
    family = "SmolVLM (Idefics3)"
