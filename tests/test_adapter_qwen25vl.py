"""The Qwen2.5-VL adapter on tiny random models: merged-grid layout vs image_grid_thw and M-RoPE positions, cache
parity (GQA), Fig. 7 reference, SDPA = eager, batching, hub-layout loading and the full pipeline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from focus_tool.adapters.qwen2_5_vl import Qwen25VLAdapter
from focus_tool.adapters.registry import load_adapter
from focus_tool.config import ProposalConfig
from focus_tool.pipeline import FocusPipeline
from focus_tool.presets import config_for
from tests.adapter_checks import (
    ASPECTS,
    CAPTIONS,
    PROMPT,
    QUESTION,
    TARGET,
    assert_cells_tile_image,
    check_batched_yes_no,
    check_loaded_like_fresh,
    check_option_log_likelihoods,
    check_sdpa_equals_eager,
    check_yes_no_margins_interleaved,
    hook_values,
    interleaved_parts,
    map_equal_to_fig7,
    noise_image,
    spy_image_features,
    zoom_with_boxes_inside,
)
from tests.tiny_models import (
    QWEN25VL_CHAT_TEMPLATE,
    QWEN_MAX_PIXELS,
    QWEN_MIN_PIXELS,
    save_tiny_qwen25vl,
    tiny_qwen25vl,
)


@pytest.fixture(scope="module")
def adapter() -> Qwen25VLAdapter:
    model, image_processor, tok = tiny_qwen25vl(seed=0)
    return Qwen25VLAdapter(model, image_processor, tok, model_id="tiny-qwen")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_qwen25vl(tmp_path_factory.mktemp("qwen") / "Qwen2.5-VL-7B-Instruct")


@pytest.mark.parametrize("wh", ASPECTS)
def test_every_token_maps_to_a_box_of_the_image(adapter: Qwen25VLAdapter, wh: tuple[int, int]) -> None:
    image = noise_image(1, wh)
    meta = adapter.image_processor(images=[image], return_tensors="pt")
    t, g_h, g_w = meta["image_grid_thw"][0].tolist()
    pre = adapter.prefill(image, PROMPT, TARGET)
    grid = pre.grid
    assert (t, grid.rows, grid.cols) == (1, g_h // 2, g_w // 2)
    assert grid.input_wh == (g_w * 14, g_h * 14)
    assert QWEN_MIN_PIXELS <= g_h * g_w * 14 * 14 <= QWEN_MAX_PIXELS
    assert int((pre.input_ids == adapter.image_token_id).sum()) == len(pre.visual_positions) == g_h * g_w // 4
    assert_cells_tile_image(grid, len(pre.visual_positions))
    # contiguous, between <|vision_start|> and <|vision_end|>
    vis = pre.visual_positions
    assert vis == list(range(vis[0], vis[0] + len(vis)))
    tok = adapter.tokenizer
    assert tok.convert_ids_to_tokens(int(pre.input_ids[vis[0] - 1])) == "<|vision_start|>"
    assert tok.convert_ids_to_tokens(int(pre.input_ids[vis[-1] + 1])) == "<|vision_end|>"


@pytest.mark.parametrize("wh", [(120, 80), (1600, 200), (200, 1600)])
def test_mrope_positions_confirm_row_major_layout(adapter: Qwen25VLAdapter, wh: tuple[int, int]) -> None:
    """The model's own M-RoPE positions (h, w) of the k-th image token are (k // cols, k % cols) + offset."""
    image = noise_image(2, wh)
    enc, _ = adapter._encode([image], [adapter.chat_text(PROMPT)])
    pos, _ = adapter.model.model.get_rope_index(
        enc["input_ids"],
        mm_token_type_ids=enc["mm_token_type_ids"],
        image_grid_thw=enc["image_grid_thw"],
        attention_mask=enc["attention_mask"],
    )  # (3, 1, N)
    grid = adapter.grid_for(wh)
    vis = torch.nonzero(enc["input_ids"][0] == adapter.image_token_id).flatten()
    k = torch.arange(len(vis))
    rows, cols = pos[1, 0, vis], pos[2, 0, vis]
    assert torch.equal(rows - rows.min(), k // grid.cols) and torch.equal(cols - cols.min(), k % grid.cols)
    assert bool((enc["mm_token_type_ids"][0, vis] == 1).all()) and int(enc["mm_token_type_ids"].sum()) == len(vis)


def test_mm_token_type_ids_change_the_logits(adapter: Qwen25VLAdapter) -> None:
    """Without mm_token_type_ids the model silently uses 1-D positions: the adapter must pass them."""
    enc, _ = adapter._encode([noise_image(3, (120, 80))], [adapter.chat_text(PROMPT)])
    with torch.no_grad():
        with_ids = adapter.model(**enc, logits_to_keep=1).logits
        without = adapter.model(**{k: v for k, v in enc.items() if k != "mm_token_type_ids"}, logits_to_keep=1).logits
    assert not torch.allclose(with_ids, without, atol=1e-6)


def test_cache_values_equal_value_projection(adapter: Qwen25VLAdapter) -> None:
    image = noise_image(4, (150, 90))
    pre = adapter.prefill(image, PROMPT, TARGET)
    hooked, ids = hook_values(adapter, image)
    assert torch.equal(ids, pre.input_ids)
    text_cfg = adapter.model.config.text_config
    assert adapter.num_kv_heads == text_cfg.num_key_value_heads == 2 < text_cfg.num_attention_heads  # GQA
    for cached, ref in zip(pre.layer_values, hooked, strict=True):
        assert cached.shape == ref.shape == (2, len(ids), text_cfg.hidden_size // text_cfg.num_attention_heads)
        torch.testing.assert_close(cached, ref, atol=1e-5, rtol=1e-5)
    assert [adapter.tokenizer.convert_ids_to_tokens(int(ids[t])) for t in pre.target_positions] == ["Ġred", "Ġcard"]


def test_map_from_cache_equals_independent_fig7(adapter: Qwen25VLAdapter) -> None:
    map_equal_to_fig7(adapter, noise_image(5, (100, 140)))


def test_sdpa_and_eager_give_the_same_map() -> None:
    check_sdpa_equals_eager(lambda attn: Qwen25VLAdapter(*tiny_qwen25vl(seed=3, attn=attn)), noise_image(6, (140, 60)))


def test_batched_yes_no_equals_one_at_a_time(adapter: Qwen25VLAdapter) -> None:
    check_batched_yes_no(adapter)


def test_loads_from_the_hub_layout(saved: Path) -> None:
    files = {p.name for p in saved.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert {"preprocessor_config.json", "chat_template.json"} <= files
    pre = json.loads((saved / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"] == "Qwen2VLImageProcessor" and pre["max_pixels"] == QWEN_MAX_PIXELS
    adapter = load_adapter(saved)
    assert isinstance(adapter, Qwen25VLAdapter)
    assert (adapter.min_pixels, adapter.max_pixels) == (QWEN_MIN_PIXELS, QWEN_MAX_PIXELS)
    assert adapter.chat_template == QWEN25VL_CHAT_TEMPLATE
    assert adapter.chat_text("hi") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n"
    )
    check_loaded_like_fresh(adapter, Qwen25VLAdapter(*tiny_qwen25vl(seed=0)), noise_image(7, (90, 60)))


@pytest.mark.parametrize("wh", [(120, 90), (1600, 200)])
def test_zoom_end_to_end_returns_boxes_inside_the_image(saved: Path, wh: tuple[int, int]) -> None:
    adapter = load_adapter(saved)
    cfg = config_for(adapter)
    assert cfg.relevance.layers is None and (cfg.relevance.smooth_sigma, cfg.relevance.downsample) == (1.0, 2)
    zoom_with_boxes_inside(adapter, cfg, noise_image(8, wh))


# ---------------------------------------------------------------------------------------------- multi-image answer

VISION = "<|vision_start|><|image_pad|><|vision_end|>"


def test_interleaved_prompt_keeps_the_order(adapter: Qwen25VLAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Qwen template renders content in order: image, caption, image, caption, ..., question (ZoomEye layout)."""
    prompts: list[str] = []
    original = adapter._encode_interleaved
    monkeypatch.setattr(adapter, "_encode_interleaved", lambda ims, p: prompts.append(p) or original(ims, p))
    adapter.generate_interleaved(interleaved_parts(), max_new_tokens=1)
    body = f"{VISION}\n{CAPTIONS[0]}\n{VISION}\n{CAPTIONS[1]}\n{VISION}\n{CAPTIONS[2]}\n{PROMPT}"
    assert prompts == [
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        + body
        + "<|im_end|>\n<|im_start|>assistant\n"
    ]
    no_template = Qwen25VLAdapter(adapter.model, adapter.image_processor, adapter.tokenizer)
    no_template.chat_template = None  # the fallback renders the same
    content = [{"type": "image"}, {"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]
    assert no_template._render(content) == adapter._render(content)
    assert no_template.chat_text("hi") == adapter.chat_text("hi")


def test_generate_interleaved_gives_each_image_its_own_grid(
    adapter: Qwen25VLAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One image_grid_thw row and one vision block per image; the model consumes exactly the tokens built."""
    parts = interleaved_parts()
    images = [p for p in parts if not isinstance(p, str)]
    expected_thw = adapter.image_processor(images=images, return_tensors="pt")["image_grid_thw"]
    counts = [int(t.prod()) // 4 for t in expected_thw]
    assert len(set(counts)) == 3  # different sizes: a wrong order or a shared count would show
    encoder_calls, feature_lens = spy_image_features(adapter, monkeypatch)
    forwards: list[dict] = []
    hook = adapter.model.register_forward_pre_hook(lambda _m, _a, kw: forwards.append(dict(kw)), with_kwargs=True)
    adapter.counter.reset()
    try:
        with adapter.counter.in_phase("answer"):
            reply = adapter.generate_interleaved(parts, max_new_tokens=3)
    finally:
        hook.remove()
    assert isinstance(reply, str)
    assert adapter.counter.counts == {"search": 0, "answer": 1, "extraction": 0}
    assert len(encoder_calls) == 1
    assert torch.equal(encoder_calls[0]["image_grid_thw"], expected_thw)
    assert feature_lens == [counts]
    ids = forwards[0]["input_ids"][0]
    tok = adapter.tokenizer
    starts = torch.nonzero(ids == tok.convert_tokens_to_ids("<|vision_start|>")).flatten().tolist()
    ends = torch.nonzero(ids == tok.convert_tokens_to_ids("<|vision_end|>")).flatten().tolist()
    assert [e - s - 1 for s, e in zip(starts, ends, strict=True)] == counts  # block k holds image k's tokens
    assert int((ids == adapter.image_token_id).sum()) == sum(counts)
    mm = forwards[0]["mm_token_type_ids"][0]
    assert torch.equal(mm.bool(), ids == adapter.image_token_id)
    assert adapter.counter.prefill_tokens == len(ids)


@pytest.mark.parametrize("type2", [False, True])
def test_zoom_answers_on_the_context_image_and_crops(saved: Path, type2: bool) -> None:
    adapter = load_adapter(saved)
    assert adapter.answer_mode == "multi"
    cfg = config_for(adapter)
    if type2:  # 1-cell ROIs on the full-resolution grid, every scored ROI kept, at most 3 crops
        cfg = dataclasses.replace(
            cfg,
            relevance=dataclasses.replace(cfg.relevance, downsample=1, smooth_sigma=0.0),
            proposal=ProposalConfig(k=16, s_min=1, s_max=1, s_dist=1.0),
            rank=dataclasses.replace(cfg.rank, t_type2=0.0),
            answer=dataclasses.replace(cfg.answer, max_crops=3, context_image="union"),
        )
    image = noise_image(14, (240, 160))
    question = "How many red cards are there?" if type2 else QUESTION
    target = "red card" if type2 else ["red card", "blue card"]
    result = FocusPipeline(adapter, cfg).zoom(image, question=question, target=target)
    assert result.target_types == (["all"] if type2 else ["single", "single"])
    assert result.answer_view == "multi" and result.answer is not None
    assert result.forward_passes.answer == 1
    selected = [r for r in result.regions if r.selected]
    if type2:
        assert len(selected) > 3 and len(result.answer_boxes) == 3  # capped, highest c_Yes first
        best = sorted(selected, key=lambda r: -(r.confidence or 0))[:3]
        assert [r.confidence for r in best] == [
            next(r.confidence for r in selected if r.box == b) for b in result.answer_boxes
        ]
    else:
        assert len(result.answer_boxes) == len(selected) == 2
        assert sorted(result.answer_boxes) == sorted(r.box for r in selected)


def test_option_log_likelihoods_equal_manual_scores(adapter: Qwen25VLAdapter) -> None:
    check_option_log_likelihoods(adapter)


def test_yes_no_margins_interleaved_equal_manual_margins(adapter: Qwen25VLAdapter) -> None:
    check_yes_no_margins_interleaved(adapter)
