"""The LLaVA-OneVision adapter on tiny random models: anyres token layout vs the processor and the model's packing,
cache parity, Fig. 7 reference, SDPA = eager, batching, hub-layout loading and the full pipeline."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from focus_tool.adapters.llava_onevision import LlavaOnevisionAdapter
from focus_tool.adapters.registry import load_adapter
from focus_tool.config import RelevanceConfig
from focus_tool.pipeline import FocusPipeline
from focus_tool.presets import config_for
from focus_tool.steps.relevance import to_grid
from tests.adapter_checks import (
    ASPECTS,
    CAPTIONS,
    PROMPT,
    QUESTION,
    TARGET,
    assert_cells_tile_image,
    best_region_anyway,
    capture_inputs_embeds,
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
from tests.tiny_models import OV_CHAT_TEMPLATE, save_tiny_onevision, tiny_onevision


@pytest.fixture(scope="module")
def adapter() -> LlavaOnevisionAdapter:
    model, image_processor, tok = tiny_onevision(seed=0)
    return LlavaOnevisionAdapter(model, image_processor, tok, model_id="tiny-ov")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_onevision(tmp_path_factory.mktemp("ov") / "llava-onevision-qwen2-7b-ov-hf")


def _stock_feature_count(adapter: LlavaOnevisionAdapter, h: int, w: int) -> int:
    """Image-token count by the stock LlavaOnevisionProcessor's own arithmetic (it cannot be built without
    torchvision, so its methods run on a stand-in holding the same fields)."""
    from transformers import LlavaOnevisionProcessor

    ns = SimpleNamespace(
        image_processor=adapter.image_processor,
        num_image_tokens=adapter.side**2,
        vision_aspect_ratio=adapter.model.config.vision_aspect_ratio,
    )
    ns._get_unpadded_features = functools.partial(LlavaOnevisionProcessor._get_unpadded_features, ns)
    return int(LlavaOnevisionProcessor._get_number_of_features(ns, h, w, adapter.tile_px, adapter.tile_px))


@pytest.mark.parametrize("wh", ASPECTS)
def test_every_local_token_maps_to_a_box_of_the_image(adapter: LlavaOnevisionAdapter, wh: tuple[int, int]) -> None:
    image = noise_image(1, wh)
    meta = adapter.image_processor(images=[image], return_tensors="pt")
    h_img, w_img = meta["image_sizes"][0].tolist()
    assert (w_img, h_img) == wh
    pre = adapter.prefill(image, PROMPT, TARGET)
    grid = pre.grid
    n_image = int((pre.input_ids == adapter.image_token_id).sum())
    assert n_image == _stock_feature_count(adapter, h_img, w_img) == adapter.num_image_tokens(wh)
    # tiles the processor produced = 1 base view + the best pinpoint's tile grid, as the model will unpack them
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    n_tiles = image_size_to_num_patches((h_img, w_img), adapter.pinpoints, adapter.tile_px)
    assert meta["pixel_values"].shape[1] == n_tiles
    assert grid.image_wh == wh and (grid.view_xyxy == (0.0, 0.0, float(wh[0]), float(wh[1])))
    assert_cells_tile_image(grid, len(pre.visual_positions))
    image_pos = torch.nonzero(pre.input_ids == adapter.image_token_id).flatten().tolist()
    base = set(image_pos[: adapter.side**2])
    newlines = set(image_pos[adapter.side**2 :][grid.cols :: grid.cols + 1])
    assert len(newlines) == grid.rows
    assert not (set(pre.visual_positions) & (base | newlines))
    assert set(pre.visual_positions) | base | newlines == set(image_pos)
    # the grid keeps the image's aspect ratio (within the unpadding's rounding to whole cells)
    assert abs(grid.cols / grid.rows - wh[0] / wh[1]) / (wh[0] / wh[1]) < 0.35


@pytest.mark.parametrize("wh", [(120, 80), (1600, 200), (200, 1600)])
def test_newline_columns_hold_the_models_image_newline(adapter: LlavaOnevisionAdapter, wh: tuple[int, int]) -> None:
    """The model's own packing puts image_newline exactly where the adapter drops the last column of each row."""
    image = noise_image(2, wh)
    embeds, ids = capture_inputs_embeds(adapter, image)  # (N, hidden)
    grid = adapter.grid_for(wh)
    image_pos = torch.nonzero(ids == adapter.image_token_id).flatten()
    local = image_pos[adapter.side**2 :].view(grid.rows, grid.cols + 1)
    newline = adapter.model.model.image_newline.detach()
    torch.testing.assert_close(embeds[local[:, -1]], newline.expand(grid.rows, -1))
    assert not torch.isclose(embeds[local[:, :-1].flatten()], newline).all(-1).any()


def test_cache_values_equal_value_projection(adapter: LlavaOnevisionAdapter) -> None:
    image = noise_image(3, (150, 90))
    pre = adapter.prefill(image, PROMPT, TARGET)
    hooked, ids = hook_values(adapter, image)
    assert torch.equal(ids, pre.input_ids)
    assert len(pre.layer_values) == adapter.num_layers == 3
    for cached, ref in zip(pre.layer_values, hooked, strict=True):
        assert cached.shape == ref.shape == (adapter.num_kv_heads, len(ids), cached.shape[-1])
        torch.testing.assert_close(cached, ref, atol=1e-5, rtol=1e-5)
    assert adapter.num_kv_heads == 2 < adapter.model.config.text_config.num_attention_heads  # GQA, used as stored
    assert [adapter.tokenizer.convert_ids_to_tokens(int(ids[t])) for t in pre.target_positions] == ["Ġred", "Ġcard"]


def test_map_from_cache_equals_independent_fig7(adapter: LlavaOnevisionAdapter) -> None:
    ours, pre = map_equal_to_fig7(adapter, noise_image(4, (100, 140)))
    m, grid = to_grid(ours, pre.grid, RelevanceConfig(smooth_sigma=1.0, downsample=2))
    assert m.shape == (grid.rows, grid.cols) == (-(-pre.grid.rows // 2), -(-pre.grid.cols // 2))


def test_sdpa_and_eager_give_the_same_map() -> None:
    check_sdpa_equals_eager(
        lambda attn: LlavaOnevisionAdapter(*tiny_onevision(seed=3, attn=attn)), noise_image(5, (140, 60))
    )


def test_batched_yes_no_equals_one_at_a_time(adapter: LlavaOnevisionAdapter) -> None:
    check_batched_yes_no(adapter)


def test_loads_from_the_hub_layout(saved: Path) -> None:
    files = {p.name for p in saved.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert {"preprocessor_config.json", "processor_config.json", "chat_template.json"} <= files
    assert json.loads((saved / "preprocessor_config.json").read_text())["image_processor_type"] == (
        "LlavaOnevisionImageProcessor"
    )
    adapter = load_adapter(saved)
    assert isinstance(adapter, LlavaOnevisionAdapter)
    assert adapter.chat_template == OV_CHAT_TEMPLATE  # read from chat_template.json
    assert adapter.chat_text("hi") == "<|im_start|>user <image>\nhi<|im_end|><|im_start|>assistant\n"
    check_loaded_like_fresh(adapter, LlavaOnevisionAdapter(*tiny_onevision(seed=0)), noise_image(6, (90, 60)))


@pytest.mark.parametrize("wh", [(120, 90), (1600, 200)])
def test_zoom_end_to_end_returns_boxes_inside_the_image(saved: Path, wh: tuple[int, int]) -> None:
    adapter = load_adapter(saved)
    cfg = config_for(adapter)
    assert cfg.relevance.layers is None  # [21, 28) exceeds 3 layers: [O//2, O)
    assert (cfg.relevance.smooth_sigma, cfg.relevance.downsample, cfg.proposal.s_max) == (1.0, 2, 9)
    result = zoom_with_boxes_inside(adapter, cfg, noise_image(7, wh))
    assert result.relevance_maps[0].rows == -(-adapter.grid_for(wh).rows // 2)


def test_loads_the_5x_layout_with_the_image_processor_inside_processor_config(tmp_path: Path) -> None:
    """transformers 5.x save_pretrained nests the image processor in processor_config.json; both layouts load."""
    path = save_tiny_onevision(tmp_path / "ov5")
    pre = json.loads((path / "preprocessor_config.json").read_text())
    (path / "preprocessor_config.json").unlink()
    proc = json.loads((path / "processor_config.json").read_text())
    pre.pop("processor_class")
    proc["image_processor"] = pre
    (path / "processor_config.json").write_text(json.dumps(proc))
    adapter = load_adapter(path)
    assert (
        isinstance(adapter, LlavaOnevisionAdapter) and adapter.pinpoints == adapter.image_processor.image_grid_pinpoints
    )


# ---------------------------------------------------------------------------------------------- multi-image answer


def test_interleaved_prompt_follows_the_stock_template(adapter: LlavaOnevisionAdapter) -> None:
    """llava-hf's template renders every image first, then each text item on its own line (order kept)."""
    parts = interleaved_parts()
    content = [{"type": "image"} if not isinstance(p, str) else {"type": "text", "text": p} for p in parts]
    assert adapter._render(content) == (
        "<|im_start|>user <image><image><image>\n"
        + "\n".join([*CAPTIONS, PROMPT])
        + "<|im_end|><|im_start|>assistant\n"
    )
    no_template = LlavaOnevisionAdapter(adapter.model, adapter.image_processor, adapter.tokenizer)
    no_template.chat_template = None  # the fallback keeps the order: image, then its caption
    assert no_template._render(content) == (
        "<|im_start|>user <image>\n" + CAPTIONS[0] + "<image>\n" + CAPTIONS[1] + "<image>\n" + CAPTIONS[2]
        + "\n" + PROMPT + "<|im_end|><|im_start|>assistant\n"
    )  # fmt: skip
    assert no_template.chat_text("hi") == adapter.chat_text("hi")


def test_generate_interleaved_gives_each_image_one_base_view(
    adapter: LlavaOnevisionAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several images: no anyres tiles, side^2 + 1 tokens per image, and the model consumes exactly that.

    ``generate`` encodes the images before the prefill through ``get_image_features`` (its signature decides which
    inputs it gets), then the prefill forward scatters them into the image tokens: both are spied on.
    """
    encoder_calls, feature_lens = spy_image_features(adapter, monkeypatch)
    forwards: list[dict] = []
    tiles: list[int] = []
    inner = adapter.model.model
    h1 = adapter.model.register_forward_pre_hook(lambda _m, _a, kw: forwards.append(dict(kw)), with_kwargs=True)
    h2 = inner.vision_tower.register_forward_pre_hook(lambda _m, a: tiles.append(int(a[0].shape[0])))
    adapter.counter.reset()
    try:
        with adapter.counter.in_phase("answer"):
            reply = adapter.generate_interleaved(interleaved_parts(), max_new_tokens=3)
    finally:
        h1.remove()
        h2.remove()
    assert isinstance(reply, str)
    assert adapter.counter.counts == {"search": 0, "answer": 1, "extraction": 0}
    per_image = adapter.side**2 + 1
    assert adapter.num_multi_image_tokens == per_image
    assert len(encoder_calls) == 1  # the images are encoded once
    kw = encoder_calls[0]
    assert tuple(kw["pixel_values"].shape[:2]) == (3, 1) and kw["batch_num_images"].tolist() == [3]
    assert tiles == [3]  # 3 base views through the vision tower, no anyres tiles
    assert feature_lens == [[per_image] * 3]  # the model's own packing: base view + image_newline
    prefill = forwards[0]  # the first forward holds the whole prompt
    assert int((prefill["input_ids"] == adapter.image_token_id).sum()) == 3 * per_image
    assert adapter.counter.prefill_tokens == prefill["input_ids"].shape[1]


def test_generate_interleaved_with_one_image_uses_anyres(adapter: LlavaOnevisionAdapter) -> None:
    """One image in the turn: the model tiles it (need_patching), so the single-image token count applies."""
    image = noise_image(13, (300, 180))
    enc = adapter._encode_interleaved([image], adapter._render([{"type": "image"}, {"type": "text", "text": "hi"}]))
    assert int((enc["input_ids"] == adapter.image_token_id).sum()) == adapter.num_image_tokens(image.size)
    assert "batch_num_images" not in enc


def test_zoom_answers_on_the_context_image_and_crops(saved: Path) -> None:
    adapter = load_adapter(saved)
    assert adapter.answer_mode == "multi"
    image = noise_image(14, (240, 160))
    result = FocusPipeline(adapter, best_region_anyway(config_for(adapter))).zoom(
        image, question=QUESTION, target=["red card", "blue card"]
    )
    assert result.answer_view == "multi" and result.answer is not None
    assert result.forward_passes.answer == 1
    selected = [r.box for r in result.regions if r.selected]
    assert len(result.answer_boxes) == len(selected) == 2
    assert sorted(result.answer_boxes) == sorted(selected)


def test_option_log_likelihoods_equal_manual_scores(adapter: LlavaOnevisionAdapter) -> None:
    check_option_log_likelihoods(adapter)


def test_yes_no_margins_interleaved_equal_manual_margins(adapter: LlavaOnevisionAdapter) -> None:
    check_yes_no_margins_interleaved(adapter)
    image = noise_image(23, (40, 90))  # one image then text: the template renders what yes_no_margins sends
    torch.testing.assert_close(
        adapter.yes_no_margins_interleaved([[image, PROMPT]]), adapter.yes_no_margins([image], [PROMPT])
    )
