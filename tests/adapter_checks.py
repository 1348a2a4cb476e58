"""Checks shared by the per-architecture adapter tests (LLaVA, OneVision, Qwen2.5-VL): hooks, the Fig. 7 reference,
batching and attention-kernel parity, loading, the pipeline and the multi-image answer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from focus_tool.config import FocusConfig, RelevanceConfig
from focus_tool.pipeline import FocusPipeline
from focus_tool.steps.relevance import relevance_map

PROMPT = "Is there a red card in the image?"
TARGET = "red card"
QUESTION = "What is the color of the dots on the red card?"
# (W, H): landscape, portrait, square, very wide, very tall, small odd sizes
ASPECTS = [(120, 80), (80, 120), (96, 96), (1600, 200), (200, 1600), (37, 90), (127, 31)]
CAPTIONS = [
    "This is the full image; the outlined regions are the focus regions.",
    "This is a zoomed-in view of focus region 1.",
    "This is a zoomed-in view of focus region 2.",
]


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


def map_equal_to_fig7(adapter: Any, image: Image.Image) -> tuple[np.ndarray, Any]:
    """The relevance map of layers [1, 3) from the adapter's cache, and its prefill, after checking the map.

    The reference is :func:`fig7_reference` on the values recomputed by hooks (:func:`hook_values`).
    """
    pre = adapter.prefill(image, PROMPT, TARGET)
    cfg = RelevanceConfig(layers=(1, 3))
    ours = relevance_map(pre.layer_values[1:3], pre.target_positions, pre.visual_positions, cfg)
    hooked, _ = hook_values(adapter, image)
    np.testing.assert_allclose(ours, fig7_reference(hooked[1:3], pre.target_positions, pre.visual_positions), atol=1e-6)
    return ours, pre


def check_sdpa_equals_eager(make: Callable[[str], Any], image: Image.Image) -> None:
    """The relevance map is the same under SDPA and eager attention; ``make(attn)`` builds the adapter."""
    maps = {}
    for attn in ("sdpa", "eager"):
        a = make(attn)
        assert a.attn_implementation == attn
        pre = a.prefill(image, PROMPT, TARGET)
        maps[attn] = relevance_map(pre.layer_values, pre.target_positions, pre.visual_positions, RelevanceConfig())
    np.testing.assert_allclose(maps["sdpa"], maps["eager"], atol=1e-5)  # tolerance: float32 kernels differ ~1e-7


def check_batched_yes_no(adapter: Any, crops: list[Image.Image] | None = None) -> None:
    """yes_no_margins over a left-padded batch of 4 (crop, question) pairs equals one pair at a time.

    ``crops``: 4 images; by default noise crops of 4 different sizes and aspects.
    """
    if crops is None:
        crops = [noise_image(i, wh) for i, wh in enumerate([(40, 90), (100, 30), (64, 64), (128, 20)])]
    texts = [PROMPT, "Is there a blue card in the image?", PROMPT, "Is there a green card in the image?"]
    batched = adapter.yes_no_margins(crops, texts)
    single = torch.cat([adapter.yes_no_margins([c], [t]) for c, t in zip(crops, texts, strict=True)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def check_loaded_like_fresh(loaded: Any, fresh: Any, image: Image.Image) -> None:
    """An adapter loaded from disk reads the "Yes" / "No" reply tokens and prefills ``image`` as ``fresh`` does.

    ``fresh``: an adapter on the same tiny model, built in memory.
    """
    yes, no = loaded.yes_no_ids()
    assert loaded.tokenizer.convert_ids_to_tokens([yes, no]) == ["Yes", "No"]
    want = fresh.prefill(image, PROMPT, TARGET)
    got = loaded.prefill(image, PROMPT, TARGET)
    assert torch.equal(want.input_ids, got.input_ids)
    torch.testing.assert_close(want.layer_values[-1], got.layer_values[-1])


def best_region_anyway(cfg: FocusConfig) -> FocusConfig:
    """``cfg`` answering on the best region even below ``rank.found_conf`` (tiny random models: P(Yes) ~ 0.5)."""
    import dataclasses

    return dataclasses.replace(cfg, answer=dataclasses.replace(cfg.answer, on_not_found="best_region"))


def zoom_with_boxes_inside(adapter: Any, cfg: FocusConfig, image: Image.Image) -> Any:
    """The pipeline's result for :data:`QUESTION` on ``image``, after checking its boxes and pass counts.

    A random-weight model's P(Yes) says nothing, so the best region is answered on whatever its confidence
    (``answer.on_not_found="best_region"``): the layout of a region answer is what is checked here."""
    cfg = best_region_anyway(cfg)
    result = FocusPipeline(adapter, cfg).zoom(image, question=QUESTION, target=TARGET)
    assert result.regions
    w, h = image.size
    for r in result.regions:
        x0, y0, x1, y1 = r.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert result.forward_passes.search >= 2 and result.forward_passes.answer == 1
    assert result.answer is not None
    return result


def interleaved_parts() -> list:
    """1 context image + 2 crops of different sizes and aspects, each followed by its caption, then the question."""
    images = [noise_image(10, (300, 180)), noise_image(11, (40, 90)), noise_image(12, (130, 50))]
    return [images[0], CAPTIONS[0], images[1], CAPTIONS[1], images[2], CAPTIONS[2], PROMPT]


def spy_image_features(adapter: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict], list[list[int]]]:
    """Record each ``get_image_features`` call: its keyword arguments and its per-image feature lengths."""
    calls: list[dict] = []
    lengths: list[list[int]] = []
    inner = adapter.model.model
    original = inner.get_image_features

    @functools.wraps(original)  # keeps the signature generate() inspects
    def spy(*args, **kwargs):
        calls.append(dict(kwargs))
        out = original(*args, **kwargs)
        lengths.append([int(f.shape[0]) for f in out.pooler_output])
        return out

    monkeypatch.setattr(inner, "get_image_features", spy)
    return calls, lengths


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


OPTIONS = ["red", "blue card", "Yes"]


def manual_option_scores(adapter: Any, images: list[Image.Image], prompt: str, options: list[str]) -> torch.Tensor:
    """(K,) mean log-softmax of each option's own tokens, read from the full logits of (prompt + option).

    Independent of the adapter's scoring helper: the option is tokenised on its own (it must be the tail of the
    encoded sequence), every position's logits are computed, and the option's positions picked by hand.
    """
    scores = []
    for option in options:
        opt_ids = adapter.tokenizer(option, add_special_tokens=False)["input_ids"]
        n = len(opt_ids)
        enc = adapter._encode_interleaved(images, prompt + option)
        ids = enc["input_ids"][0]
        assert ids[-n:].tolist() == opt_ids  # the reply is exactly the option's tokens
        with torch.no_grad():
            logits = adapter.model(**enc, use_cache=False).logits[0].float()  # (N, V)
        log_p = torch.log_softmax(logits[len(ids) - n - 1 : len(ids) - 1], dim=-1)  # position t predicts t + 1
        scores.append(log_p[torch.arange(n), torch.tensor(opt_ids)].mean())
    return torch.stack(scores)


def check_option_log_likelihoods(adapter: Any) -> None:
    """option_log_likelihoods (1 and 2 images) and its interleaved variant equal the manual computation."""
    images = [noise_image(20, (120, 80)), noise_image(21, (40, 90))]
    for k in (1, 2):
        adapter.counter.reset()
        with adapter.counter.in_phase("answer"):
            got = adapter.option_log_likelihoods(images[:k], PROMPT, OPTIONS)
        assert got.shape == (len(OPTIONS),)
        assert adapter.counter.counts == {"search": 0, "answer": len(OPTIONS), "extraction": 0}  # one pass per option
        want = manual_option_scores(adapter, images[:k], adapter.chat_text(PROMPT, n_images=k), OPTIONS)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    parts = [images[0], "This is the full image.", images[1], "This is a zoomed-in view.", PROMPT]
    got = adapter.option_log_likelihoods_interleaved(parts, OPTIONS)
    _, prompt = adapter._interleaved_prompt(parts)
    torch.testing.assert_close(got, manual_option_scores(adapter, images, prompt, OPTIONS), atol=1e-5, rtol=1e-5)


def check_yes_no_margins_interleaved(adapter: Any) -> None:
    """One prompt per entry; each margin is l_Yes - l_No of that prompt's last position; one pass each."""
    a, b = noise_image(22, (120, 80)), noise_image(23, (40, 90))
    prompts = [[a, "This is the main image.", b, "This is the zoomed-in view.", PROMPT], [b, PROMPT]]
    adapter.counter.reset()
    got = adapter.yes_no_margins_interleaved(prompts)
    assert adapter.counter.counts["search"] == 2
    yes, no = adapter.yes_no_ids()
    for margin, parts in zip(got, prompts, strict=True):
        images, prompt = adapter._interleaved_prompt(parts)
        with torch.no_grad():
            last = adapter.model(**adapter._encode_interleaved(images, prompt), use_cache=False).logits[0, -1]
        torch.testing.assert_close(margin, (last[yes] - last[no]).float(), atol=1e-5, rtol=1e-5)
