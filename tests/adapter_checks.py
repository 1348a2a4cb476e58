"""Checks shared by the per-architecture adapter tests (OneVision, Qwen2.5-VL): hooks and the Fig. 7 reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PROMPT = "Is there a red card in the image?"
TARGET = "red card"
# (W, H): landscape, portrait, square, very wide, very tall, small odd sizes
ASPECTS = [(120, 80), (80, 120), (96, 96), (1600, 200), (200, 1600), (37, 90), (127, 31)]


def noise_image(seed: int = 0, wh: tuple[int, int] = (120, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((wh[1], wh[0], 3)) * 255).astype("uint8"))


def hook_values(adapter: Any, image: Image.Image) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Values recomputed from each layer's input: v_proj(input_layernorm(hidden_states[i])), each (H_kv, N, D)."""
    enc, _ = adapter._encode([image], [adapter.chat_text(PROMPT)])
    with torch.no_grad():
        out = adapter.model(**enc, output_hidden_states=True, use_cache=False)
    layers = adapter.model.model.language_model.layers
    vals = []
    for i, layer in enumerate(layers):
        d = layer.self_attn.head_dim
        with torch.no_grad():
            v = layer.self_attn.v_proj(layer.input_layernorm(out.hidden_states[i]))  # (1, N, H_kv * D)
        vals.append(v[0].view(v.shape[1], -1, d).transpose(0, 1).float())  # (H_kv, N, D)
    return vals, enc["input_ids"][0]


def fig7_reference(values: list[torch.Tensor], tpos: list[int], vis: list[int]) -> np.ndarray:
    """The paper's Fig. 7 literally: N x N similarity, (S + I)/2, row-normalise, sum layers, token product."""
    out = torch.ones(len(vis), dtype=torch.float64)
    for t in tpos:
        acc = torch.zeros(len(vis), dtype=torch.float64)
        for v in values:
            x = F.normalize(v.double(), dim=-1)  # (H, N, D)
            x = x.transpose(0, 1).reshape(x.shape[1], -1)  # (N, H*D)
            s = x @ x.T  # (N, N) = sum of per-head cosines
            r = (s + torch.eye(s.shape[0], dtype=torch.float64)) / 2
            r = r / r.sum(-1, keepdim=True)
            acc += r[t, vis]
        acc = acc / acc.sum()
        out = out * acc.clamp_min(0)
        out = out / out.sum()
    return out.numpy()


def assert_cells_tile_image(grid: Any, n_visual: int) -> None:
    """Every map token k (row-major) maps to a pixel box inside the image; the boxes tile the image exactly."""
    w, h = grid.image_wh
    assert n_visual == grid.rows * grid.cols
    k = np.arange(n_visual)
    r, c = k // grid.cols, k % grid.cols
    boxes = grid.cells_to_image_xyxy(np.stack([c, r, c + 1, r + 1], axis=1).astype(np.float64))  # (P, 4) image px
    assert (boxes[:, 0] >= -1e-9).all() and (boxes[:, 1] >= -1e-9).all()
    assert (boxes[:, 2] <= w + 1e-6).all() and (boxes[:, 3] <= h + 1e-6).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum()
    assert area == np.float64(w * h) or abs(area - w * h) < 1e-6 * w * h  # no gaps, no overlaps (grid-aligned)
    assert boxes[-1, 2] == np.float64(w) or abs(boxes[-1, 2] - w) < 1e-6
    assert abs(boxes[-1, 3] - h) < 1e-6


def capture_inputs_embeds(adapter: Any, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, hidden) embeddings the language model receives (image features scattered in) and (N,) input ids."""
    seen: dict[str, torch.Tensor] = {}

    def pre_hook(_m: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
        seen["embeds"] = kwargs["inputs_embeds"][0].detach().clone()

    handle = adapter.model.model.language_model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        enc, _ = adapter._encode([image], [adapter.chat_text(PROMPT)])
        with torch.no_grad():
            adapter.model(**enc, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return seen["embeds"], enc["input_ids"][0]
