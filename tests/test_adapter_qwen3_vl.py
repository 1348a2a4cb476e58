"""The Qwen3-VL adapter on tiny random models: 32-px merged cells vs image_grid_thw and the model's M-RoPE
positions, where DeepStack's visual features enter the cached values, the map vs a layer-input hook reference,
SDPA = eager, batching, hub-layout loading, `focus zoom` end to end and the multi-image answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from focus_tool.adapters.qwen3_vl import Qwen3VLAdapter
from focus_tool.adapters.registry import load_adapter, supported_architectures
from focus_tool.cli import main
from focus_tool.config import RelevanceConfig
from focus_tool.presets import PRESETS, config_for
from focus_tool.result import FocusResult
from focus_tool.steps.relevance import relevance_map
from tests.adapter_checks import (
    ASPECTS,
    CAPTIONS,
    PROMPT,
    TARGET,
    assert_cells_tile_image,
    check_batched_yes_no,
    check_loaded_like_fresh,
    check_option_log_likelihoods,
    check_sdpa_equals_eager,
    check_yes_no_margins_interleaved,
    fig7_reference,
    interleaved_parts,
    noise_image,
    spy_image_features,
    zoom_with_boxes_inside,
)
from tests.tiny_qwen3_vl import (
    QWEN3VL_CHAT_TEMPLATE,
    QWEN3VL_DEEPSTACK,
    QWEN3VL_MAX_PIXELS,
    QWEN3VL_MIN_PIXELS,
    save_tiny_qwen3vl,
    tiny_qwen3vl,
)

VISION = "<|vision_start|><|image_pad|><|vision_end|>"
CELL_PX = 32  # 16-px patches merged 2 x 2


@pytest.fixture(scope="module")
def adapter() -> Qwen3VLAdapter:
    return Qwen3VLAdapter(*tiny_qwen3vl(seed=0), model_id="tiny-qwen3-vl")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_qwen3vl(tmp_path_factory.mktemp("qwen3vl") / "Qwen3-VL-8B-Instruct")


def layer_inputs(adapter: Qwen3VLAdapter, image: Any) -> tuple[list[torch.Tensor], Any, Any]:
    """What each decoder layer really receives (forward pre-hooks), the model output with hidden states, and the
    encoded prompt; the DeepStack features the tower returned are kept in ``out.image_outputs``."""
    enc, _ = adapter._encode([image], [adapter.chat_text(PROMPT)])
    seen: list[torch.Tensor] = []

    def grab(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append((args[0] if args else kwargs["hidden_states"])[0].detach().clone())  # (N, hidden)

    layers = adapter.model.model.language_model.layers
    handles = [layer.register_forward_pre_hook(grab, with_kwargs=True) for layer in layers]
    try:
        with torch.no_grad():
            out = adapter.model(**enc, output_hidden_states=True, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return seen, out, enc


def values_of(adapter: Qwen3VLAdapter, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """v_proj(input_layernorm(h_i)) per layer, (H_kv, N, D): the values layer i computes from its input h_i."""
    vals = []
    for layer, h in zip(adapter.model.model.language_model.layers, inputs, strict=True):
        with torch.no_grad():
            v = layer.self_attn.v_proj(layer.input_layernorm(h))  # (N, H_kv * D)
        vals.append(v.view(v.shape[0], -1, layer.self_attn.head_dim).transpose(0, 1).float())
    return vals


# ---------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("wh", [*ASPECTS, (300, 100), (100, 300)])  # includes 3:1 and 1:3 (and 8:1, 1:8)
def test_every_token_maps_to_a_box_of_the_image(adapter: Qwen3VLAdapter, wh: tuple[int, int]) -> None:
    image = noise_image(1, wh)
    meta = adapter.image_processor(images=[image], return_tensors="pt")
    t, g_h, g_w = meta["image_grid_thw"][0].tolist()
    pre = adapter.prefill(image, PROMPT, TARGET)
    grid = pre.grid
    assert (t, grid.rows, grid.cols) == (1, g_h // 2, g_w // 2)
    assert grid.input_wh == (g_w * 16, g_h * 16) == (grid.cols * CELL_PX, grid.rows * CELL_PX)
    assert QWEN3VL_MIN_PIXELS <= g_h * g_w * 16 * 16 <= QWEN3VL_MAX_PIXELS
    assert meta["pixel_values"].shape == (g_h * g_w, 3 * 2 * 16 * 16)  # 16-px patches, temporal 2
    assert int((pre.input_ids == adapter.image_token_id).sum()) == len(pre.visual_positions) == g_h * g_w // 4
    assert_cells_tile_image(grid, len(pre.visual_positions))
    vis = pre.visual_positions
    assert vis == list(range(vis[0], vis[0] + len(vis)))
    tok = adapter.tokenizer
    assert tok.convert_ids_to_tokens(int(pre.input_ids[vis[0] - 1])) == "<|vision_start|>"
    assert tok.convert_ids_to_tokens(int(pre.input_ids[vis[-1] + 1])) == "<|vision_end|>"


def test_a_token_covers_the_pixels_the_processor_put_in_its_patches(adapter: Qwen3VLAdapter) -> None:
    """A bright square at a known place lands in the merged token whose box the grid gives for that place.

    The processor's own patch order: merged token k holds 2 x 2 consecutive patch rows of ``pixel_values``.
    """
    from PIL import Image

    image = Image.new("RGB", (300, 100), (0, 0, 0))  # 3:1
    image.paste((255, 255, 255), (200, 40, 215, 55))
    grid = adapter.grid_for(image.size)
    pix = adapter.image_processor(images=[image], return_tensors="pt")["pixel_values"]  # (g_h * g_w, 3*2*16*16)
    per_token = pix.view(grid.rows * grid.cols, 4, -1).amax(dim=(1, 2))  # brightest value of each merged token
    lit = torch.nonzero(per_token > 0).flatten().tolist()
    boxes = grid.cells_to_image_xyxy(
        np.array(
            [[k % grid.cols, k // grid.cols, k % grid.cols + 1, k // grid.cols + 1] for k in lit], dtype=np.float64
        )
    )
    assert lit
    for x0, y0, x1, y1 in boxes:  # every lit token's box touches the square (resampling blurs by < 1 patch)
        assert x0 < 215 + 16 and x1 > 200 - 16 and y0 < 55 + 16 and y1 > 40 - 16


@pytest.mark.parametrize("wh", [(120, 80), (300, 100), (100, 300), (1600, 200)])
def test_mrope_positions_confirm_row_major_layout(adapter: Qwen3VLAdapter, wh: tuple[int, int]) -> None:
    """The model's own M-RoPE positions (t, h, w) of the k-th image token are (s, s + k // cols, s + k % cols)."""
    enc, _ = adapter._encode([noise_image(2, wh)], [adapter.chat_text(PROMPT)])
    pos, _ = adapter.model.model.get_rope_index(
        enc["input_ids"],
        mm_token_type_ids=enc["mm_token_type_ids"],
        image_grid_thw=enc["image_grid_thw"],
        attention_mask=enc["attention_mask"],
    )  # (3, 1, N)
    grid = adapter.grid_for(wh)
    vis = torch.nonzero(enc["input_ids"][0] == adapter.image_token_id).flatten()
    k = torch.arange(len(vis))
    start = int(vis[0])  # the text before the image takes positions 0 .. start - 1
    assert torch.equal(pos[0, 0, vis], torch.full_like(k, start))
    assert torch.equal(pos[1, 0, vis], start + k // grid.cols) and torch.equal(pos[2, 0, vis], start + k % grid.cols)
    assert int(pos[0, 0, vis[-1] + 1]) == start + max(grid.rows, grid.cols)  # the text continues after the image
    assert bool((enc["mm_token_type_ids"][0, vis] == 1).all()) and int(enc["mm_token_type_ids"].sum()) == len(vis)


def test_mm_token_type_ids_are_passed_and_required(adapter: Qwen3VLAdapter) -> None:
    """The adapter passes mm_token_type_ids (1 on image tokens); Qwen3-VL refuses image inputs without them."""
    enc, _ = adapter._encode([noise_image(3, (120, 80))], [adapter.chat_text(PROMPT)])
    assert torch.equal(enc["mm_token_type_ids"].bool(), enc["input_ids"] == adapter.image_token_id)
    with torch.no_grad(), pytest.raises(ValueError, match="mm_token_type_ids"):
        adapter.model(**{k: v for k, v in enc.items() if k != "mm_token_type_ids"}, logits_to_keep=1)


# ---------------------------------------------------------------------------------------------- DeepStack and the cache


def test_deepstack_features_enter_the_cached_values_of_later_layers(adapter: Qwen3VLAdapter) -> None:
    """Feature k is added at the image positions after decoder layer k; layer i's cache holds v_proj of its input.

    So layer 0's image values hold no DeepStack term, layers 1 .. n hold the additions of the layers before them,
    and text positions never get one. ``output_hidden_states`` records the layer outputs before the addition.
    """
    image = noise_image(4, (150, 90))
    inputs, out, enc = layer_inputs(adapter, image)
    n = adapter.deepstack_layers
    assert n == QWEN3VL_DEEPSTACK < adapter.num_layers
    deep = [torch.cat(f, dim=0) for f in out.image_outputs.deepstack_features]  # n x (P, hidden)
    assert len(deep) == n
    img = enc["input_ids"][0] == adapter.image_token_id
    hidden = [h[0] for h in out.hidden_states]  # [embeddings, output of layer 0, ...]: before the additions
    torch.testing.assert_close(inputs[0], hidden[0])
    for i in range(1, adapter.num_layers):
        expected = hidden[i].clone()
        if i <= n:
            expected[img] += deep[i - 1]
        torch.testing.assert_close(inputs[i], expected, atol=1e-6, rtol=1e-6)
        if i <= n:
            assert not torch.allclose(inputs[i][img], hidden[i][img], atol=1e-4)
        torch.testing.assert_close(inputs[i][~img], hidden[i][~img])  # text: no addition
    pre = adapter.prefill(image, PROMPT, TARGET)
    assert torch.equal(pre.input_ids, enc["input_ids"][0])
    for cached, ref in zip(pre.layer_values, values_of(adapter, inputs), strict=True):
        torch.testing.assert_close(cached, ref, atol=1e-5, rtol=1e-5)
    before = values_of(adapter, hidden[: adapter.num_layers])  # what the values would be without DeepStack so far
    vis = pre.visual_positions
    torch.testing.assert_close(pre.layer_values[0], before[0], atol=1e-5, rtol=1e-5)
    for i in range(1, n + 1):
        assert not torch.allclose(pre.layer_values[i][:, vis], before[i][:, vis], atol=1e-4)


def test_cache_values_are_gqa_heads_of_the_layer_input(adapter: Qwen3VLAdapter) -> None:
    image = noise_image(5, (100, 140))
    pre = adapter.prefill(image, PROMPT, TARGET)
    text_cfg = adapter.model.config.text_config
    assert adapter.num_kv_heads == text_cfg.num_key_value_heads == 2 < text_cfg.num_attention_heads  # GQA
    assert pre.layer_values[0].shape == (2, len(pre.input_ids), text_cfg.head_dim)
    assert [adapter.tokenizer.convert_ids_to_tokens(int(pre.input_ids[t])) for t in pre.target_positions] == [
        "Ġred",
        "Ġcard",
    ]


@pytest.mark.parametrize("layers", [(1, 3), (0, 4)])
def test_map_from_cache_equals_independent_fig7(adapter: Qwen3VLAdapter, layers: tuple[int, int]) -> None:
    """The map of the adapter's cache = the paper's Fig. 7 on the values recomputed from the hooked layer inputs."""
    image = noise_image(6, (140, 100))
    pre = adapter.prefill(image, PROMPT, TARGET)
    lo, hi = layers
    ours = relevance_map(pre.layer_values[lo:hi], pre.target_positions, pre.visual_positions, RelevanceConfig())
    hooked = values_of(adapter, layer_inputs(adapter, image)[0])
    ref = fig7_reference(hooked[lo:hi], pre.target_positions, pre.visual_positions)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_sdpa_and_eager_give_the_same_map() -> None:
    check_sdpa_equals_eager(lambda attn: Qwen3VLAdapter(*tiny_qwen3vl(seed=3, attn=attn)), noise_image(7, (140, 60)))


def test_batched_yes_no_equals_one_at_a_time(adapter: Qwen3VLAdapter) -> None:
    check_batched_yes_no(adapter)


def test_image_prefix_cache_is_not_offered(adapter: Qwen3VLAdapter) -> None:
    """M-RoPE text positions after the image are model state (module docstring): the adapter does not opt in."""
    assert not adapter.supports_image_cache
    assert not adapter.enable_image_cache(2) and adapter.image_cache is None


# ---------------------------------------------------------------------------------------------- loading, preset, CLI


def test_loads_from_the_hub_layout(saved: Path) -> None:
    files = {p.name for p in saved.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert {"preprocessor_config.json", "chat_template.json"} <= files
    pre = json.loads((saved / "preprocessor_config.json").read_text())
    assert (pre["image_processor_type"], pre["processor_class"]) == ("Qwen2VLImageProcessorFast", "Qwen3VLProcessor")
    assert json.loads((saved / "config.json").read_text())["model_type"] == "qwen3_vl"
    adapter = load_adapter(saved)
    assert isinstance(adapter, Qwen3VLAdapter)
    assert type(adapter.image_processor).__name__ == "Qwen2VLImageProcessorPil"  # no torchvision: the PIL backend
    assert (adapter.patch_px, adapter.merge) == (16, 2)
    assert (adapter.min_pixels, adapter.max_pixels) == (QWEN3VL_MIN_PIXELS, QWEN3VL_MAX_PIXELS)
    assert adapter.chat_template == QWEN3VL_CHAT_TEMPLATE
    assert adapter.chat_text("hi") == f"<|im_start|>user\n{VISION}hi<|im_end|>\n<|im_start|>assistant\n"  # no system
    check_loaded_like_fresh(adapter, Qwen3VLAdapter(*tiny_qwen3vl(seed=0)), noise_image(8, (90, 60)))


def test_registry_and_preset(saved: Path) -> None:
    assert ("qwen3_vl", "Qwen3VLForConditionalGeneration", "qwen3-vl") in supported_architectures()
    adapter = load_adapter(saved)
    cfg = config_for(adapter)
    assert cfg == PRESETS["qwen3-vl"] and adapter.answer_mode == "multi"
    assert cfg.relevance.layers is None and (cfg.relevance.smooth_sigma, cfg.relevance.downsample) == (1.0, 2)
    assert Qwen3VLAdapter(*tiny_qwen3vl(seed=0)).model_id == "qwen3-vl"


def test_zoom_cli_end_to_end(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`focus zoom IMG -t ... --model TINYDIR --json`: boxes inside the image, search passes counted."""
    wh = (300, 100)  # 3:1
    path = tmp_path / "wide.png"
    noise_image(9, wh).save(path)
    code = main(["zoom", str(path), "-t", "red card", "--model", str(saved), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = FocusResult.model_validate_json(out)
    assert result.regions and result.forward_passes.search >= 2
    for r in result.regions:
        x0, y0, x1, y1 = r.box
        assert 0 <= x0 < x1 <= wh[0] and 0 <= y0 < y1 <= wh[1]


def test_zoom_question_on_a_tall_image(saved: Path) -> None:
    adapter = load_adapter(saved)
    result = zoom_with_boxes_inside(adapter, config_for(adapter), noise_image(10, (100, 300)))  # 1:3
    assert result.answer_view == "multi"


# ---------------------------------------------------------------------------------------------- multi-image answer


def test_interleaved_prompt_keeps_the_order(adapter: Qwen3VLAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    """The template renders content in order (ZoomEye layout), with no system turn; the fallback renders the same."""
    prompts: list[str] = []
    original = adapter._encode_interleaved
    monkeypatch.setattr(adapter, "_encode_interleaved", lambda ims, p: prompts.append(p) or original(ims, p))
    adapter.generate_interleaved(interleaved_parts(), max_new_tokens=1)
    body = f"{VISION}\n{CAPTIONS[0]}\n{VISION}\n{CAPTIONS[1]}\n{VISION}\n{CAPTIONS[2]}\n{PROMPT}"
    assert prompts == ["<|im_start|>user\n" + body + "<|im_end|>\n<|im_start|>assistant\n"]
    no_template = Qwen3VLAdapter(adapter.model, adapter.image_processor, adapter.tokenizer)
    no_template.chat_template = None
    content = [{"type": "image"}, {"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]
    assert no_template._render(content) == adapter._render(content)
    assert no_template.chat_text("hi") == adapter.chat_text("hi")


def test_generate_interleaved_gives_each_image_its_own_grid(
    adapter: Qwen3VLAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = interleaved_parts()
    images = [p for p in parts if not isinstance(p, str)]
    expected_thw = adapter.image_processor(images=images, return_tensors="pt")["image_grid_thw"]
    counts = [int(t.prod()) // 4 for t in expected_thw]
    assert len(set(counts)) == 3
    encoder_calls, feature_lens = spy_image_features(adapter, monkeypatch)
    forwards: list[dict] = []
    hook = adapter.model.register_forward_pre_hook(lambda _m, _a, kw: forwards.append(dict(kw)), with_kwargs=True)
    try:
        reply = adapter.generate_interleaved(parts, max_new_tokens=3)
    finally:
        hook.remove()
    assert isinstance(reply, str) and len(encoder_calls) == 1
    assert torch.equal(encoder_calls[0]["image_grid_thw"], expected_thw) and feature_lens == [counts]
    ids = forwards[0]["input_ids"][0]
    tok = adapter.tokenizer
    starts = torch.nonzero(ids == tok.convert_tokens_to_ids("<|vision_start|>")).flatten().tolist()
    ends = torch.nonzero(ids == tok.convert_tokens_to_ids("<|vision_end|>")).flatten().tolist()
    assert [e - s - 1 for s, e in zip(starts, ends, strict=True)] == counts


def test_option_log_likelihoods_equal_manual_scores(adapter: Qwen3VLAdapter) -> None:
    check_option_log_likelihoods(adapter)


def test_yes_no_margins_interleaved_equal_manual_margins(adapter: Qwen3VLAdapter) -> None:
    check_yes_no_margins_interleaved(adapter)
