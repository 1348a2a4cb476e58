"""Qwen2.5-VL adapter (``Qwen2_5_VLForConditionalGeneration``, e.g. Qwen/Qwen2.5-VL-7B-Instruct).

Loading without torchvision: the stock ``Qwen2_5_VLProcessor`` needs a video processor (torchvision) in
transformers 5.x, so this adapter loads ``AutoImageProcessor`` (PIL backend) and ``AutoTokenizer`` and expands each
``<|image_pad|>`` itself to ``t * g_h * g_w / merge^2`` tokens, as the processor does. It also builds
``mm_token_type_ids`` (1 on image tokens): without them the model silently falls back to 1-D positions instead of
M-RoPE and the logits change (``tests/test_adapter_qwen25vl.py`` checks it).

Geometry (docs/method.md, Geometry): native resolution. The whole image is ``smart_resize``d to multiples of patch *
merge (28 px) with a pixel count in [min_pixels, max_pixels] (read from the loaded processor); 14-px patches are merged
2 x 2, so the image tokens are (g_h / 2) x (g_w / 2), contiguous, row-major (``image_grid_thw`` = (1, g_h, g_w)). All
merged tokens form the map grid, which spans the whole image: ``PatchGrid.stretched``.

Answer step (docs/method.md, Stage VI; ``answer_mode = "multi"``): :meth:`Qwen25VLAdapter.generate_interleaved` sends
the context image and the crops in one user turn. The checkpoint's template renders content items in order, each image
as its own ``<|vision_start|><|image_pad|><|vision_end|>`` block; each image is ``smart_resize``d on its own and has its
own ``image_grid_thw`` row, so its block expands to that row's ``t * g_h * g_w / merge^2`` tokens.

GQA: the cache holds ``num_key_value_heads`` value heads; they are used as stored (docs/method.md, Stage III). Values
carry no rotary embedding, so M-RoPE does not touch the V-V map.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from focus_tool.adapters.chat import ChatTemplateAdapter
from focus_tool.adapters.common import ContinuationInputs, expand_image_tokens
from focus_tool.errors import ModelLoadError
from focus_tool.grid import PatchGrid

logger = logging.getLogger(__name__)
_FALLBACK_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{images}{text}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
_VISION_WRAP = "<|vision_start|>{}<|vision_end|>"


class Qwen25VLAdapter(ChatTemplateAdapter):
    """Adapter for ``Qwen2_5_VLForConditionalGeneration`` checkpoints (native resolution; multi-image answer)."""

    preset_name = "qwen2.5-vl"
    answer_mode = "multi"
    family = "Qwen2.5-VL"
    model_class_name = "Qwen2_5_VLForConditionalGeneration"
    image_count_source = "image_grid_thw counts"

    def _configure(self) -> None:
        """Patch and merge sizes and the pixel budget from the image processor, checked against the vision tower."""
        cfg, ip = self.model.config, self.image_processor
        self.video_token_id: int = int(cfg.video_token_id)  # (image_token, set by the base class: "<|image_pad|>")
        self.patch_px: int = int(ip.patch_size)  # 14
        self.merge: int = int(ip.merge_size)  # 2
        size = dict(ip.size)
        self.min_pixels: int = int(size.get("shortest_edge", getattr(ip, "min_pixels", 56 * 56)))
        self.max_pixels: int = int(size.get("longest_edge", getattr(ip, "max_pixels", 28 * 28 * 1280)))
        vision = cfg.vision_config
        if (int(vision.patch_size), int(vision.spatial_merge_size)) != (self.patch_px, self.merge):
            raise ModelLoadError(
                f"image processor patch/merge {self.patch_px}/{self.merge} differ from the vision tower's "
                f"{vision.patch_size}/{vision.spatial_merge_size}"
            )

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

    def _fallback_prompt(self, content: list[dict[str, str]]) -> str:
        """ChatML with the default system message, as the checkpoint's template renders a turn: items in order.

        Each image is its own ``<|vision_start|><|image_pad|><|vision_end|>`` block.
        """
        vision = _VISION_WRAP.format(self.image_token)
        body = "".join(vision if c["type"] == "image" else c["text"] for c in content)
        return _FALLBACK_TEMPLATE.format(images="", text=body)

    def _pixel_inputs(self, images: Sequence[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Native-resolution patches of ``images`` (each ``smart_resize``d on its own) and each image's token count.

        ``pixel_values``: (sum_i g_h g_w, 3 * T * 14 * 14) patches of all images; ``image_grid_thw``: (n, 3); an image
        takes t * g_h * g_w / merge^2 tokens.
        """
        pix = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        counts = [int(thw.prod()) // self.merge**2 for thw in pix["image_grid_thw"]]
        return {"pixel_values": pix["pixel_values"].to(self.dtype), "image_grid_thw": pix["image_grid_thw"]}, counts

    def _token_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """``mm_token_type_ids``: (B, N), 1 on image tokens, 2 on video tokens, else 0 (without them: 1-D positions)."""
        image, video = (input_ids == self.image_token_id).int(), (input_ids == self.video_token_id).int()
        return {"mm_token_type_ids": image + 2 * video}

    def _continuation_inputs(self, enc: Any) -> ContinuationInputs:
        """M-RoPE positions of a continuation of the prefilled prompt: text positions after the prefix, shifted by
        the ``rope_deltas`` the prefill left on the model (as ``generate`` does; all three sections alike).
        """

        def inputs(rows: int, prefix_len: int, new_len: int) -> dict[str, Any]:
            deltas = self.model.model.rope_deltas  # (1, 1), set by the prefill of ``enc``
            pos = torch.arange(prefix_len, prefix_len + new_len, device=self.device)[None].expand(rows, -1)  # (K, L)
            return {"position_ids": pos + deltas.to(self.device)}

        return inputs

    def _encode_interleaved(self, images: Sequence[Image.Image], prompt: str) -> Any:
        """One prompt holding ``len(images)`` vision blocks, in order; each block gets its own image's token count.

        Each image is ``smart_resize``d on its own. ``pixel_values``: the patches of all images, concatenated;
        ``image_grid_thw``: (n, 3), one row per image.
        """
        pixels: dict[str, torch.Tensor]
        pixels, counts = self._pixel_inputs(images) if images else ({}, [])
        enc = self.tokenizer([expand_image_tokens(prompt, self.image_token, counts)], return_tensors="pt")
        runs = _run_lengths(torch.nonzero(enc["input_ids"][0] == self.image_token_id).flatten().tolist())
        if runs != counts:
            raise RuntimeError(f"image-token blocks {runs} differ from the image_grid_thw counts {counts}")
        enc.update(self._token_inputs(enc["input_ids"]))
        enc.update(pixels)
        return enc.to(self.device)

    # ------------------------------------------------------------------ token layout of a prefill

    def _map_positions(self, enc: Any, image_wh: tuple[int, int]) -> tuple[list[int], PatchGrid]:
        """Every merged image token, row-major over the (g_h / 2) x (g_w / 2) grid, and the grid."""
        grid = self.grid_for(image_wh)
        _, g_h, g_w = (int(v) for v in enc["image_grid_thw"][0])
        if (g_h // self.merge, g_w // self.merge) != (grid.rows, grid.cols):
            raise RuntimeError(f"image_grid_thw {(g_h, g_w)} does not match the computed grid {grid.rows}x{grid.cols}")
        vis = torch.nonzero(enc["input_ids"][0] == self.image_token_id).flatten().tolist()  # row-major (rows, cols)
        if len(vis) != grid.rows * grid.cols:
            raise RuntimeError(f"expected {grid.rows * grid.cols} image tokens, found {len(vis)}")
        return vis, grid

    def _interleaved_text(self, parts: Sequence[Image.Image | str], i: int) -> str:
        r"""The ZoomEye layout: a line break after each text line that precedes an image and before each text line
        after the first part, so ``[img, "a", img, "b", "q"]`` renders as ``<vision>\na\n<vision>\nb\nq``.
        """
        before_image = i + 1 < len(parts) and isinstance(parts[i + 1], Image.Image)
        return ("\n" if i else "") + str(parts[i]) + ("\n" if before_image else "")


def _run_lengths(positions: list[int]) -> list[int]:
    """Lengths of the runs of consecutive integers in sorted ``positions`` ([3, 4, 5, 9, 10] -> [3, 2])."""
    runs: list[int] = []
    for i, p in enumerate(positions):
        if i and p == positions[i - 1] + 1:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs
