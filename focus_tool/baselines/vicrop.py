"""ViCrop, "MLLMs know where to look" (arXiv 2502.17422; github.com/saccharomycetes/mllms_know @ a64c5d5).

As upstream ``llava_methods.py``, ``utils.py`` and ``run.py``: one importance map over the image-token grid, one
square crop picked by a sliding-window sharpness rule, the answer on the original image and the crop together:

- **rel-att**: head-mean attention of the last prompt position to the image tokens at layer ``ATT_LAYER``, for the
  question, divided element-wise by the same for the generic prompt "Write a general description of the image."
  (2 forwards per map).
- **grad-att**: attention * ReLU(gradient of the log-probability of the model's own top next token w.r.t. that
  attention), for the question only (1 forward + 1 backward per map; counted as one pass).
- **-high** (``high=True``): the image is split into ``ceil(H / 1024)`` rows x ``int(rows * W / H)`` columns of blocks,
  one map per block, tiled back (``np.block``) into one map of the whole image (upstream ``utils.py::high_res``).
- **Box selection** (:func:`bbox_from_att_image_adaptive`, upstream ``utils.py``): ratios 1.0-2.0 of the base size,
  window sums, sharpness = (max - mean of its axis neighbours) / cells, best ratio, crop centred and clamped.

Why eager attention: the original reads ``output_attentions=True`` outputs, the explicit softmax matrices that SDPA
and FlashAttention kernels never build. Here the adapter reads the one needed layer's matrix from its attention
module (:meth:`MLLMAdapter.attention_to_image`), which exists under eager attention only; this module refuses to
run otherwise. Choices [I]: the adapter's map spans LLaVA's padded square, so it is resampled onto the image area
before box selection (the original's processor feeds the resized image); ``layer`` defaults to 14 / 32 of the depth
(LLaVA-1.5-7B's ``ATT_LAYER = 14``); windows of fewer than one cell are widened to one cell (the original's
``int()`` can give 0 cells and a division by zero); the answer prompt follows the harness's answer scheme (ViCrop's
free-form answer + difflib matching is not reproduced).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.baselines.common import AnswerScheme, answer_on
from focus_tool.errors import ConfigError, FocusError
from focus_tool.result import FocusResult, Region, RelevanceMapOut

QUESTION_SUFFIX = "Answer the question using a single word or phrase."
GENERIC_PROMPT = "Write a general description of the image."
RATIOS = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
FloatMap = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class ViCropConfig:
    """ViCrop settings (ViCrop, arXiv 2502.17422; saccharomycetes/mllms_know)."""

    variant: Literal["rel-att", "grad-att"] = "rel-att"
    high: bool = False  # the -high block variant
    layer: int | None = None  # None = round(14 / 32 * num_layers) (LLaVA-1.5-7B: 14)
    base_size: int | None = None  # s in the box selection; None = the encoder input side (336 for LLaVA-1.5)
    block_px: int = 1024  # -high block height
    answer_max_new_tokens: int = 16

    def __post_init__(self) -> None:
        if self.block_px < 16:
            raise ConfigError(f"block_px must be >= 16, got {self.block_px}")


def bbox_from_att_image_adaptive(
    att_map: FloatMap, image_size: tuple[int, int], bbox_size: float
) -> tuple[int, int, int, int]:
    """ViCrop's adaptive square crop from an importance map.

    Args:
        att_map: (h, w) importance map whose cells tile the image uniformly.
        image_size: (W, H) of the image the map covers, pixels.
        bbox_size: base crop side s (pixels); ratios 1.0-2.0 of it are tried.

    Returns:
        (x0, y0, x1, y1) integer crop box in image pixels.
    """
    h_cells, w_cells = att_map.shape
    cell_w, cell_h = image_size[0] / w_cells, image_size[1] / h_cells
    poses: list[tuple[int, int]] = []
    diffs: list[float] = []
    nums: list[tuple[int, int]] = []
    sizes: list[float] = []
    for ratio in RATIOS:
        bw = max(1, min(int(bbox_size * ratio / cell_w), w_cells))
        bh = max(1, min(int(bbox_size * ratio / cell_h), h_cells))
        if w_cells - bw < 1 and h_cells - bh < 1:  # the window covers the whole map
            if ratio == 1.0:
                return 0, 0, image_size[0], image_size[1]
            continue
        sliding = np.zeros((h_cells - bh + 1, w_cells - bw + 1))  # (positions y, positions x)
        best, pos = -np.inf, (0, 0)
        for x in range(w_cells - bw + 1):  # x outer, y inner, strict ">": first maximum in this order
            for y in range(h_cells - bh + 1):
                s = float(att_map[y : y + bh, x : x + bw].sum())
                sliding[y, x] = s
                if s > best:
                    best, pos = s, (x, y)
        px, py = pos
        neighbours = []
        if px > 0:
            neighbours.append(sliding[py, px - 1])
        if px < sliding.shape[1] - 1:
            neighbours.append(sliding[py, px + 1])
        if py > 0:
            neighbours.append(sliding[py - 1, px])
        if py < sliding.shape[0] - 1:
            neighbours.append(sliding[py + 1, px])
        diffs.append((best - float(np.mean(neighbours))) / (bw * bh))
        poses.append(pos)
        nums.append((bw, bh))
        sizes.append(bbox_size * ratio)
    k = int(np.argmax(diffs))
    (px, py), (bw, bh), side = poses[k], nums[k], sizes[k]
    half = side // 2
    xc: float = int(px * cell_w + cell_w * bw / 2)
    yc: float = int(py * cell_h + cell_h * bh / 2)
    xc = half if xc < half else xc
    yc = half if yc < half else yc
    xc = image_size[0] - half if xc > image_size[0] - half else xc
    yc = image_size[1] - half if yc > image_size[1] - half else yc
    x0, y0 = max(0, xc - half), max(0, yc - half)
    x1, y1 = min(image_size[0], xc + half), min(image_size[1], yc + half)
    return int(x0), int(y0), int(x1), int(y1)


def high_res_blocks(image_wh: tuple[int, int], block_px: int) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    """(rows, cols, row-major xyxy blocks): ``rows = ceil(H / block_px)``, ``cols = int(rows * W / H)``."""
    w, h = image_wh
    rows = max(1, math.ceil(h / block_px))
    cols = max(1, int(rows * w / h))
    bw, bh = math.ceil(w / cols), math.ceil(h / rows)
    blocks = [(c * bw, r * bh, min(w, (c + 1) * bw), min(h, (r + 1) * bh)) for r in range(rows) for c in range(cols)]
    return rows, cols, blocks


class ViCropMethod:
    """ViCrop rel-att / grad-att (optionally -high) over an adapter with :meth:`attention_to_image`."""

    name = "vicrop"

    def __init__(self, adapter: MLLMAdapter, config: ViCropConfig | None = None) -> None:
        if adapter.attn_implementation != "eager":
            raise FocusError(
                f"ViCrop reads attention probabilities, which only eager attention builds; this model runs "
                f"{adapter.attn_implementation!r} (SDPA and FlashAttention never materialise them). Load the model "
                "with attn_implementation='eager' (CLI: --attn eager)."
            )
        self.adapter = adapter
        self.config = config or ViCropConfig()
        n = adapter.num_layers
        self.layer = self.config.layer if self.config.layer is not None else min(n - 1, round(14 / 32 * n))
        if not 0 <= self.layer < n:
            raise ConfigError(f"layer must be in [0, {n}), got {self.layer}")
        # 336: LLaVA-1.5's side, for adapters without a fixed encoder input
        self.base_size = self.config.base_size or int(adapter.encoder_px or 336)

    def block_map(self, image: Image.Image, question: str) -> FloatMap:
        """(side, side) importance map of ``image`` resampled onto its own area (the pad band dropped)."""
        text = f"{question} {QUESTION_SUFFIX}"
        with self.adapter.counter.in_phase("search"):
            if self.config.variant == "rel-att":
                maps = self.adapter.attention_to_image(image, [text, f"{GENERIC_PROMPT} {QUESTION_SUFFIX}"], self.layer)
                m = (maps[0] / maps[1]).double().numpy()
            else:
                m = self.adapter.attention_to_image(image, [text], self.layer, gradient=True)[0].double().numpy()
        return self._image_area(m, image.size)

    def _image_area(self, m: FloatMap, image_wh: tuple[int, int]) -> FloatMap:
        """Resample a map over the adapter's model-input view onto the image rectangle, same cell count."""
        grid = self.adapter.grid_for(image_wh)
        vx0, vy0, vx1, vy1 = grid.view_xyxy
        rows, cols = m.shape
        k = 8  # sub-cells per cell
        up = np.kron(m, np.ones((k, k)))  # (rows * k, cols * k) over the view
        sx, sy = cols * k / (vx1 - vx0), rows * k / (vy1 - vy0)
        c0, c1 = round((0 - vx0) * sx), round((image_wh[0] - vx0) * sx)
        r0, r1 = round((0 - vy0) * sy), round((image_wh[1] - vy0) * sy)
        sub = up[max(0, r0) : max(r0 + 1, r1), max(0, c0) : max(c0 + 1, c1)].astype(np.float32)
        out = Image.fromarray(sub, mode="F").resize((cols, rows), Image.Resampling.BOX)
        return np.asarray(out, dtype=np.float64)

    def importance_map(self, image: Image.Image, question: str) -> FloatMap:
        """The whole image's map: one block, or the tiled -high blocks."""
        if not self.config.high:
            return self.block_map(image, question)
        rows, cols, blocks = high_res_blocks(image.size, self.config.block_px)
        maps = [self.block_map(image.crop(b), question) for b in blocks]
        return np.block([[maps[r * cols + c] for c in range(cols)] for r in range(rows)])

    def run(
        self,
        image: Image.Image,
        *,
        question: str,
        options: Sequence[str] | None,
        scheme: AnswerScheme = "letter",
        suffix: str = "",
    ) -> FocusResult:
        """Map, crop, answer on [original, crop]."""
        self.adapter.counter.reset()
        t0 = time.perf_counter()
        m = self.importance_map(image, question)  # (h, w) over the image
        box = bbox_from_att_image_adaptive(m, image.size, self.base_size)
        t1 = time.perf_counter()
        answer = answer_on(
            self.adapter,
            [image, image.crop(box)],
            question=question,
            options=options,
            scheme=scheme,
            suffix=suffix,
            max_new_tokens=self.config.answer_max_new_tokens,
        )
        t2 = time.perf_counter()
        total = float(m.sum())
        norm = m / total if total > 0 else np.full_like(m, 1.0 / m.size)
        return FocusResult.from_run(
            method="vicrop",
            model_id=self.adapter.model_id,
            image_wh=image.size,
            counter=self.adapter.counter,
            timings_s={"search": t1 - t0, "answer": t2 - t1},
            question=question,
            answer=answer,
            regions=[
                Region(id="r1", box=box, confidence=None, target=question, rank=1, anchor_score=0.0, selected=True)
            ],
            answer_view="multi",
            answer_boxes=[box],
            relevance_maps=[
                RelevanceMapOut(
                    target=question,
                    rows=m.shape[0],
                    cols=m.shape[1],
                    values=np.round(np.clip(norm, 0, None), 6).tolist(),
                    view_xyxy=(0.0, 0.0, float(image.size[0]), float(image.size[1])),
                )
            ],
        )
