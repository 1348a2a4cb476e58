"""The LLaVA-OneVision adapter on tiny random models: anyres token layout vs the processor and the model's packing,
cache parity, Fig. 7 reference, SDPA = eager, batching, hub-layout loading and the full pipeline."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from focus_tool.adapters.llava_onevision import LlavaOnevisionAdapter
from focus_tool.adapters.registry import load_adapter
from focus_tool.config import RelevanceConfig
from focus_tool.pipeline import FocusPipeline
from focus_tool.presets import config_for
from focus_tool.steps.relevance import relevance_map, to_grid
from tests.adapter_checks import (
    ASPECTS,
    PROMPT,
    TARGET,
    assert_cells_tile_image,
    capture_inputs_embeds,
    fig7_reference,
    hook_values,
    noise_image,
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
    image = noise_image(4, (100, 140))
    pre = adapter.prefill(image, PROMPT, TARGET)
    cfg = RelevanceConfig(layers=(1, 3))
    ours = relevance_map(pre.layer_values[1:3], pre.target_positions, pre.visual_positions, cfg)
    hooked, _ = hook_values(adapter, image)
    ref = fig7_reference(hooked[1:3], pre.target_positions, pre.visual_positions)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    m, grid = to_grid(ours, pre.grid, RelevanceConfig(smooth_sigma=1.0, downsample=2))
    assert m.shape == (grid.rows, grid.cols) == (-(-pre.grid.rows // 2), -(-pre.grid.cols // 2))


def test_sdpa_and_eager_give_the_same_map() -> None:
    image = noise_image(5, (140, 60))
    maps = {}
    for attn in ("sdpa", "eager"):
        a = LlavaOnevisionAdapter(*tiny_onevision(seed=3, attn=attn))
        assert a.attn_implementation == attn
        pre = a.prefill(image, PROMPT, TARGET)
        maps[attn] = relevance_map(pre.layer_values, pre.target_positions, pre.visual_positions, RelevanceConfig())
    np.testing.assert_allclose(maps["sdpa"], maps["eager"], atol=1e-5)


def test_batched_yes_no_equals_one_at_a_time(adapter: LlavaOnevisionAdapter) -> None:
    crops = [noise_image(i, wh) for i, wh in enumerate([(40, 90), (100, 30), (64, 64), (128, 20)])]
    texts = [PROMPT, "Is there a blue card in the image?", PROMPT, "Is there a green card in the image?"]
    batched = adapter.yes_no_margins(crops, texts)
    single = torch.cat([adapter.yes_no_margins([c], [t]) for c, t in zip(crops, texts, strict=True)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


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
    yes, no = adapter.yes_no_ids()
    assert adapter.tokenizer.convert_ids_to_tokens([yes, no]) == ["Yes", "No"]
    model, image_processor, tok = tiny_onevision(seed=0)
    image = noise_image(6, (90, 60))
    fresh = LlavaOnevisionAdapter(model, image_processor, tok).prefill(image, PROMPT, TARGET)
    loaded = adapter.prefill(image, PROMPT, TARGET)
    assert torch.equal(fresh.input_ids, loaded.input_ids)
    torch.testing.assert_close(fresh.layer_values[-1], loaded.layer_values[-1])


@pytest.mark.parametrize("wh", [(120, 90), (1600, 200)])
def test_zoom_end_to_end_returns_boxes_inside_the_image(saved: Path, wh: tuple[int, int]) -> None:
    adapter = load_adapter(saved)
    cfg = config_for(adapter)
    assert cfg.relevance.layers is None  # [21, 28) exceeds 3 layers: [O//2, O)
    assert (cfg.relevance.smooth_sigma, cfg.relevance.downsample, cfg.proposal.s_max) == (1.0, 2, 9)
    image = noise_image(7, wh)
    result = FocusPipeline(adapter, cfg).zoom(
        image, question="What is the color of the dots on the red card?", target="red card"
    )
    assert result.regions
    for r in result.regions:
        x0, y0, x1, y1 = r.box
        assert 0 <= x0 < x1 <= wh[0] and 0 <= y0 < y1 <= wh[1]
    assert result.relevance_maps[0].rows == -(-adapter.grid_for(wh).rows // 2)
    assert result.forward_passes.search >= 2 and result.forward_passes.answer == 1
    assert result.answer is not None


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
