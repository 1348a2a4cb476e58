r"""LLaVA-OneVision adapter (``LlavaOnevisionForConditionalGeneration``, e.g. llava-hf/llava-onevision-qwen2-7b-ov-hf).

Loading without torchvision: in transformers 5.x the stock ``LlavaOnevisionProcessor`` needs a video processor,
which needs torchvision. This adapter loads ``AutoImageProcessor`` (the PIL backend when torchvision is absent) and
``AutoTokenizer`` and does the processor's one job itself: it expands each ``<image>`` placeholder of the templated
prompt to the number of image features the model will scatter into it.

Token layout of one image (docs/method.md, Geometry) [hf: ``pack_image_features``]::

    [side*side base-view tokens][row 0: w local tokens + newline] ... [row h-1: w local tokens + newline]

The local grid (h, w) comes from the model's own helpers: ``get_anyres_image_grid_shape`` (best pinpoint tile grid),
``unpad_image`` (drop the feature rows/columns that lie in the padding) and the ``anyres_max_N`` shrink (bilinear resize
when the grid exceeds N tiles' worth of features). The relevance map uses the local tokens only (paper §3.2); newline
and base tokens are excluded from the map but stay in the row sums (docs/method.md, Geometry). The unpadded local grid
spans the whole image: ``PatchGrid.anyres_local``.

Answer step (docs/method.md, Stage VI; ``answer_mode = "multi"``): :meth:`LlavaOnevisionAdapter.generate_interleaved`
sends the context image and the crops in one user turn. With several images in a sample the model encodes **each image
as one base view, without anyres tiles** (``need_patching`` is true only for a sample with exactly one image, in both
the image processor and ``get_image_features``): the processor pads each image to a square (mean colour) and resizes it
to one tile, and ``pack_image_features`` appends one ``image_newline``, so each image takes ``side^2 + 1`` tokens (730
on the 7B checkpoint). ``batch_num_images`` must reach the model, or it would try to unpack anyres tiles.

Interleaving: llava-hf's chat template renders **all images of a turn first**, then every text item on its own line,
so with the stock template the prompt is ``<image><image>...\n<caption 1>\n<caption 2>...\n<question>``: the
captions keep the image order but no longer sit next to their image. The adapter keeps the checkpoint's template (the
format the model was evaluated with in transformers) and logs this once; the token expansion is exact either way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from focus_tool.adapters.chat import ChatTemplateAdapter
from focus_tool.adapters.common import expand_image_tokens, keeps_content_order
from focus_tool.errors import ModelLoadError
from focus_tool.grid import PatchGrid
from focus_tool.ops.images import shrink_long_side

logger = logging.getLogger(__name__)
_FALLBACK_OPEN, _FALLBACK_CLOSE = "<|im_start|>user ", "<|im_end|><|im_start|>assistant\n"  # llava-hf's layout


class LlavaOnevisionAdapter(ChatTemplateAdapter):
    """Adapter for ``LlavaOnevisionForConditionalGeneration`` checkpoints (anyres; multi-image answer)."""

    preset_name = "llava-onevision"
    answer_mode = "multi"
    supports_image_cache = True  # text after the image: positions follow from the cache length
    family = "LLaVA-OneVision"
    model_class_name = "LlavaOnevisionForConditionalGeneration"
    image_count_source = "the model's feature counts"

    def _configure(self) -> None:
        """Tile size, base grid and anyres pinpoints from the config, checked against the image processor."""
        cfg = self.model.config
        vision = cfg.vision_config
        self.tile_px: int = int(vision.image_size)  # 384 for the 7B checkpoint
        self.side: int = int(vision.image_size // vision.patch_size)  # 27: 729 base tokens per tile
        self.pinpoints: list[list[int]] = [list(p) for p in cfg.image_grid_pinpoints]
        self.aspect_ratio_setting: str = str(cfg.vision_aspect_ratio)  # "anyres_max_9"
        self._order_logged = False
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

    @property
    def encoder_px(self) -> int:
        """The tile side the vision tower takes (384 for the 7B)."""
        return self.tile_px

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

    def _fallback_prompt(self, content: list[dict[str, str]]) -> str:
        """llava-hf's layout, items in order: each image placeholder as is, each text item on a new line."""
        body = "".join(self.image_token if c["type"] == "image" else "\n" + c["text"] for c in content)
        return _FALLBACK_OPEN + body + _FALLBACK_CLOSE

    @property
    def num_multi_image_tokens(self) -> int:
        """Image tokens of each image in a several-image prompt: one base view (side^2) + one image_newline."""
        return self.side * self.side + 1

    def _pixel_inputs(self, images: Sequence[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Anyres tiles of one image per prompt and each image's token count (:meth:`num_image_tokens`).

        ``pixel_values``: (B, max_tiles + 1, 3, tile, tile), zero-padded over tiles; ``image_sizes``: (B, 2) as (H, W).
        """
        rgb = [im.convert("RGB") for im in images]
        pix = self.image_processor(images=rgb, return_tensors="pt")
        counts = [self.num_image_tokens((int(w), int(h))) for h, w in pix["image_sizes"].tolist()]
        return {"pixel_values": pix["pixel_values"].to(self.dtype), "image_sizes": pix["image_sizes"]}, counts

    def _encode_interleaved(self, images: Sequence[Image.Image], prompt: str) -> Any:
        """One prompt holding ``len(images)`` placeholders, in order. One image: the anyres path of :meth:`_encode`.

        Several images: ``pixel_values`` (n, 1, 3, tile, tile), one padded-to-square base view each;
        ``image_sizes`` (n, 2); ``batch_num_images`` (1,) = [n], which switches the model to one view per image.
        """
        if len(images) <= 1:
            return self._encode(list(images) or None, [prompt])[0]
        n = len(images)
        pix = self.image_processor(images=[[shrink_long_side(im).convert("RGB") for im in images]], return_tensors="pt")
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

    # ------------------------------------------------------------------ token layout of a prefill

    def _map_positions(self, enc: Any, image_wh: tuple[int, int]) -> tuple[list[int], PatchGrid]:
        """The local grid's tokens, row-major, and the grid: base-view and newline tokens are not map cells."""
        grid = self.grid_for(image_wh)
        image_pos = torch.nonzero(enc["input_ids"][0] == self.image_token_id).flatten()  # (n_base + h (w + 1),)
        n_base = self.side * self.side
        if len(image_pos) != n_base + grid.rows * (grid.cols + 1):
            raise RuntimeError(
                f"expected {n_base} + {grid.rows} x ({grid.cols} + 1) image tokens, found {len(image_pos)}"
            )
        local = image_pos[n_base:].view(grid.rows, grid.cols + 1)[:, : grid.cols]  # (h, w): newline column dropped
        return local.flatten().tolist(), grid

    def _interleaved_prompt(self, parts: Sequence[Image.Image | str]) -> tuple[list[Image.Image], str]:
        """The images of ``parts`` and the templated prompt of the turn, in order as far as the template keeps it.

        Warns once if the template reorders the turn (module docstring). With several images each is encoded as one
        base view of ``side^2 + 1`` tokens (:meth:`_encode_interleaved`).
        """
        images, prompt = super()._interleaved_prompt(parts)
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
