"""The LLaVA adapter on tiny random models: cache parity, SDPA = eager, planted pattern, batching, FP counting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.config import ProposalConfig, RelevanceConfig
from focus_tool.steps.proposals import propose_regions
from focus_tool.steps.relevance import relevance_map, to_grid
from tests.adapter_checks import PROMPT, check_batched_yes_no, check_sdpa_equals_eager, fig7_reference
from tests.tiny_models import tiny_llava


def _image(seed: int = 0, wh: tuple[int, int] = (320, 200)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((wh[1], wh[0], 3)) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def adapter() -> LlavaAdapter:
    model, processor = tiny_llava(seed=0)
    return LlavaAdapter(model, processor, model_id="tiny")


def _hook_values(adapter: LlavaAdapter, image: Image.Image) -> tuple[list[torch.Tensor], list[int], list[int]]:
    """Values recomputed from each layer's input: v_proj(input_layernorm(hidden_states[i])), (H_kv, N, D)."""
    prompt = adapter.chat_text(PROMPT, with_image=True)
    enc = adapter._inputs([image], [prompt])
    with torch.no_grad():
        out = adapter.model(**enc, output_hidden_states=True, use_cache=False)
    layers = adapter.model.model.language_model.layers
    cfg = adapter.model.config.text_config
    d = cfg.hidden_size // cfg.num_attention_heads
    vals = []
    for i, layer in enumerate(layers):
        h = out.hidden_states[i]
        with torch.no_grad():
            v = layer.self_attn.v_proj(layer.input_layernorm(h))  # (1, N, H_kv * D)
        vals.append(v[0].view(v.shape[1], -1, d).transpose(0, 1))  # (H_kv, N, D)
    ids = enc["input_ids"][0]
    vis = torch.nonzero(ids == adapter.image_token_id).flatten().tolist()
    tpos = adapter.target_token_positions(prompt, "red card", ids)
    return vals, vis, tpos


def test_cache_values_equal_value_projection(adapter: LlavaAdapter) -> None:
    image = _image()
    pre = adapter.prefill(image, PROMPT, "red card")
    hook_vals, vis, tpos = _hook_values(adapter, image)
    assert len(pre.layer_values) == adapter.num_layers
    for cached, hooked in zip(pre.layer_values, hook_vals, strict=True):
        assert cached.shape == hooked.shape == (adapter.num_kv_heads, len(pre.input_ids), cached.shape[-1])
        torch.testing.assert_close(cached, hooked.float(), atol=1e-5, rtol=1e-5)
    assert pre.visual_positions == vis and pre.target_positions == tpos


def test_map_from_cache_equals_independent_fig7(adapter: LlavaAdapter) -> None:
    image = _image(1)
    pre = adapter.prefill(image, PROMPT, "red card")
    cfg = RelevanceConfig(layers=(1, 3))
    ours = relevance_map(pre.layer_values[1:3], pre.target_positions, pre.visual_positions, cfg)
    hook_vals, vis, tpos = _hook_values(adapter, image)
    ref = fig7_reference(hook_vals[1:3], tpos, vis)
    assert len(tpos) == 2  # "red" and "card"
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert ours.sum() == pytest.approx(1.0)


def test_sdpa_and_eager_give_the_same_map() -> None:
    check_sdpa_equals_eager(lambda attn: LlavaAdapter(*tiny_llava(seed=3, attn=attn)), _image(2))


@pytest.mark.parametrize("planted_cell", [(0, 3), (2, 1), (3, 3)])
def test_planted_pattern_is_recovered_as_top_region(adapter: LlavaAdapter, planted_cell: tuple[int, int]) -> None:
    """The image token of one cell is given the target token's value vector in every layer.

    A common offset is added to every value first (so all cosines are positive, as in a trained model, and the
    Fig. 7 row sums are positive); the planted token then has cosine 1 per head with the target, the maximum.
    """
    image = _image(4, wh=(256, 256))
    prompt = adapter.chat_text(PROMPT, with_image=True)
    ids = adapter._inputs([image], [prompt])["input_ids"][0]
    vis = torch.nonzero(ids == adapter.image_token_id).flatten()
    (tpos,) = adapter.target_token_positions(prompt, "card", ids)
    r, c = planted_cell
    planted = int(vis[r * adapter.side + c])

    def plant(_m: torch.nn.Module, _i: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out + 3.0 * out.norm(dim=-1, keepdim=True).mean()  # (1, N, H*D) common positive offset
        out[0, planted] = out[0, tpos]
        return out

    hooks = [layer.self_attn.v_proj.register_forward_hook(plant) for layer in adapter.model.model.language_model.layers]
    try:
        pre = adapter.prefill(image, PROMPT, "card")
    finally:
        for h in hooks:
            h.remove()
    cfg = RelevanceConfig()
    m, grid = to_grid(relevance_map(pre.layer_values, pre.target_positions, pre.visual_positions, cfg), pre.grid, cfg)
    assert np.unravel_index(m.argmax(), m.shape) == planted_cell
    props = propose_regions(m, ProposalConfig(k=5, s_min=1, s_max=1, s_dist=1.0))
    c0, r0, c1, r1 = props.cells_xyxy[0]
    assert (c0, r0, c1, r1) == (c, r, c + 1, r + 1)
    box = grid.cells_to_image_xyxy(props.cells_xyxy[:1])[0]
    assert box.tolist() == pytest.approx([c * 64, r * 64, (c + 1) * 64, (r + 1) * 64])


def test_batched_yes_no_equals_one_at_a_time(adapter: LlavaAdapter) -> None:
    check_batched_yes_no(adapter, [_image(i, wh=(40 + 30 * i, 90)) for i in range(4)])


def test_counter_matches_model_calls(adapter: LlavaAdapter) -> None:
    """Every forward of the HF model (outside generate) and every generate call is counted by the adapter."""
    calls = {"forward_rows": 0, "generate": 0}
    inside_generate = {"on": False}
    original_generate = adapter.model.generate

    def counting_generate(*args: object, **kwargs: object) -> torch.Tensor:
        calls["generate"] += 1
        inside_generate["on"] = True
        try:
            return original_generate(*args, **kwargs)
        finally:
            inside_generate["on"] = False

    def pre_hook(_m: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
        if not inside_generate["on"]:
            calls["forward_rows"] += int(kwargs["input_ids"].shape[0])

    handle = adapter.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    adapter.model.generate = counting_generate  # type: ignore[method-assign]
    try:
        adapter.counter.reset()
        adapter.prefill(_image(), PROMPT, "red card")
        adapter.yes_no_margins([_image(1), _image(2), _image(3)], [PROMPT] * 3)
        adapter.generate(_image(4), "What is the color of the dots on the red card?", max_new_tokens=3)
        adapter.generate(None, "Question: What?", max_new_tokens=3)
    finally:
        handle.remove()
        adapter.model.generate = original_generate  # type: ignore[method-assign]
    assert calls == {"forward_rows": 4, "generate": 2}
    assert sum(adapter.counter.counts.values()) == 6


def test_per_head_self_similarity_and_repeat_kv_invariance(adapter: LlavaAdapter) -> None:
    """docs/method.md, Stage III: S_tt = H; with one layer the per-token map is invariant to repeating KV heads."""
    pre = adapter.prefill(_image(5), PROMPT, "red card")
    v = pre.layer_values[0]
    vn = F.normalize(v, dim=-1)
    t = pre.target_positions[0]
    assert float(torch.einsum("hd,hd->", vn[:, t], vn[:, t])) == pytest.approx(v.shape[0], rel=1e-5)
    cfg = RelevanceConfig(negative_handling="none")
    one = relevance_map([v], [t], pre.visual_positions, cfg)
    rep = relevance_map([v.repeat_interleave(2, dim=0)], [t], pre.visual_positions, cfg)
    np.testing.assert_allclose(one, rep, atol=1e-6)
