"""The SmolVLM (Idefics3-family) adapter on tiny random models: tiles vs the processor's own rows / cols, tiles and
the stock Idefics3Processor's token ids, token -> pixel boxes found by a marker, the model's own pixel shuffle, cache
parity, Fig. 7 reference, SDPA = eager, batching, hub-layout loading (both model types), the image-prefix cache, the
multi-image answer and `focus zoom` end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from focus_tool.adapters.registry import load_adapter
from focus_tool.adapters.smolvlm import Idefics3Adapter, SmolVLMAdapter, resized_canvas_wh
from focus_tool.cli import main
from focus_tool.config import RelevanceConfig
from focus_tool.errors import ModelLoadError
from focus_tool.presets import config_for
from focus_tool.result import FocusResult
from focus_tool.steps.relevance import relevance_map
from tests.adapter_checks import (
    ASPECTS,
    CAPTIONS,
    PROMPT,
    TARGET,
    assert_cells_tile_image,
    check_batched_yes_no,
    check_option_log_likelihoods,
    check_sdpa_equals_eager,
    check_yes_no_margins_interleaved,
    fig7_reference,
    interleaved_parts,
    noise_image,
    zoom_with_boxes_inside,
)
from tests.tiny_smolvlm import (
    SMOL_TILE_PX,
    SMOL_TOKENS_PER_TILE,
    SMOLVLM_CHAT_TEMPLATE,
    save_tiny_smolvlm,
    tiny_smolvlm,
)

# 3:2, 2:3, 1:1, 3:1, 1:3, a canvas of exactly one tile, and the shared odd / extreme sizes
MARKER_ASPECTS = [(240, 160), (160, 240), (150, 150), (600, 200), (200, 600), (37, 90), (1600, 200)]
MEAN = STD = 0.5


@pytest.fixture(scope="module")
def adapter() -> SmolVLMAdapter:
    return SmolVLMAdapter(*tiny_smolvlm(seed=0), model_id="tiny-smolvlm")


@pytest.fixture(scope="session")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_smolvlm(tmp_path_factory.mktemp("smolvlm") / "SmolVLM2-256M-Video-Instruct")


@pytest.fixture(scope="session")
def saved_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_smolvlm(tmp_path_factory.mktemp("idefics3") / "SmolVLM-256M-Instruct", flavor="idefics3")


def _views_pixels(adapter: SmolVLMAdapter, image: Image.Image) -> torch.Tensor:
    """(views, 3, T, T) the processor's tiles of one image, back in [0, 1] (its all-zero padding rows dropped)."""
    pix = adapter.image_processor(images=[[image.convert("RGB")]], return_tensors="pt")["pixel_values"][0]
    return pix * STD + MEAN


def _token_brightness(adapter: SmolVLMAdapter, image: Image.Image) -> np.ndarray:
    """(views, side, side) mean brightness of each token's block (scale x scale patches) in the processor's tiles."""
    gray = _views_pixels(adapter, image).mean(1)  # (V, T, T)
    block = adapter.patch_px * adapter.shuffle
    v, t, _ = gray.shape
    return gray.view(v, t // block, block, t // block, block).mean((2, 4)).numpy()


def _marker_image(wh: tuple[int, int], centre: tuple[float, float], half: tuple[float, float]) -> Image.Image:
    """Grey image with a white rectangle of half-size ``half`` about ``centre`` (image pixels)."""
    arr = np.full((wh[1], wh[0], 3), 96, dtype=np.uint8)
    x0, x1 = int(np.floor(centre[0] - half[0])), int(np.ceil(centre[0] + half[0]))
    y0, y1 = int(np.floor(centre[1] - half[1])), int(np.ceil(centre[1] + half[1]))
    arr[max(y0, 0) : y1, max(x0, 0) : x1] = 255
    return Image.fromarray(arr)


def _hook_values(adapter: SmolVLMAdapter, image: Image.Image) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Values recomputed from each SmolLM2 layer's input: v_proj(input_layernorm(hidden_states[i])), (H_kv, N, D)."""
    enc, _ = adapter._encode([image], [adapter.chat_text(PROMPT)])
    with torch.no_grad():
        out = adapter.model(**enc, output_hidden_states=True, use_cache=False)
    vals = []
    for i, layer in enumerate(adapter.model.model.text_model.layers):
        d = layer.self_attn.head_dim
        with torch.no_grad():
            v = layer.self_attn.v_proj(layer.input_layernorm(out.hidden_states[i]))  # (1, N, H_kv * D)
        vals.append(v[0].view(v.shape[1], -1, d).transpose(0, 1).float())
    return vals, enc["input_ids"][0]


def _embeds_seen_by_lm(adapter: SmolVLMAdapter, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, hidden) embeddings SmolLM2 receives (image features scattered in) and (N,) input ids."""
    seen: dict[str, torch.Tensor] = {}

    def pre_hook(_m: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
        seen["embeds"] = kwargs["inputs_embeds"][0].detach().clone()

    handle = adapter.model.model.text_model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        enc, _ = adapter._encode([image], [adapter.chat_text(PROMPT)])
        with torch.no_grad():
            adapter.model(**enc, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return seen["embeds"], enc["input_ids"][0]


# ---------------------------------------------------------------------------------------------- layout and geometry


@pytest.mark.parametrize("wh", sorted(set(ASPECTS) | set(MARKER_ASPECTS) | {(64, 64), (100, 101), (513, 3)}))
def test_tiles_follow_the_processor(adapter: SmolVLMAdapter, wh: tuple[int, int]) -> None:
    """rows / cols = the processor's own (return_row_col_info; get_number_of_image_patches agrees); its tiles are
    the canvas it resizes to cut row-major, the global image (last) the canvas resized to one tile; the prompt holds
    side^2 <image> per view between the layout tokens; the map's tokens are every tile token once."""
    image = noise_image(1, wh)
    ip = adapter.image_processor
    meta = ip(images=[[image]], return_tensors="pt", return_row_col_info=True)
    rows, cols = int(meta["rows"][0][0]), int(meta["cols"][0][0])
    assert adapter.tile_grid(wh) == (cols, rows)
    n_patches, n_rows, n_cols = ip.get_number_of_image_patches(wh[1], wh[0])
    assert (n_rows, n_cols) == (rows, cols) and n_patches == (rows * cols + 1 if rows else 0)
    views = adapter.views(wh)
    assert len(views) == rows * cols + 1 and views[-1].kind == "global"
    # the processor's tiles: its own resize chain gives the canvas; tile (r, c) is its (r, c) block
    from transformers.image_utils import SizeDict

    arr = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    canvas = ip.resize_for_vision_encoder(ip.resize(arr, ip.size, ip.resample), adapter.tile_px, ip.resample)
    assert (canvas.shape[2], canvas.shape[1]) == resized_canvas_wh(
        wh, longest_edge=adapter.longest_edge, tile_px=adapter.tile_px, split=True
    )
    tiles = _views_pixels(adapter, image).numpy()
    assert tiles.shape[0] == len(views)
    t = adapter.tile_px
    for k, v in enumerate(views):
        assert v.token_start == k * SMOL_TOKENS_PER_TILE
        if v.kind == "tile":
            want = canvas[:, v.row * t : (v.row + 1) * t, v.col * t : (v.col + 1) * t] / 255.0
        else:
            want = canvas if rows == 0 else ip.resize(canvas, SizeDict(height=t, width=t), ip.resample)
            want = want / 255.0
        np.testing.assert_allclose(tiles[k], want, atol=1e-5)
    pre = adapter.prefill(image, PROMPT, TARGET)
    ids = pre.input_ids
    image_pos = torch.nonzero(ids == adapter.image_token_id).flatten()
    assert len(image_pos) == len(views) * SMOL_TOKENS_PER_TILE == adapter.num_image_tokens(wh)
    tok = adapter.tokenizer
    runs = image_pos.view(len(views), SMOL_TOKENS_PER_TILE)
    assert (runs[:, -1] - runs[:, 0] == SMOL_TOKENS_PER_TILE - 1).all()  # each view's tokens are one run
    for v, run in zip(views, runs, strict=True):
        before = tok.convert_ids_to_tokens(ids[run[0] - 2 : run[0]].tolist())
        tag = "<global-img>" if v.kind == "global" else f"<row_{v.row + 1}_col_{v.col + 1}>"
        assert before == ["<fake_token_around_image>", tag]
    assert tok.convert_ids_to_tokens(int(ids[image_pos[-1] + 1])) == "<fake_token_around_image>"
    grid = pre.grid
    side = adapter.side
    assert (grid.rows, grid.cols) == ((rows * side, cols * side) if rows else (side, side))
    assert_cells_tile_image(grid, len(pre.visual_positions))
    global_tokens = set(runs[-1].tolist()) if rows else set()
    assert set(pre.visual_positions) == set(image_pos.tolist()) - global_tokens  # every tile token once


@pytest.mark.parametrize("wh", [(120, 80), (300, 100), (100, 300), (64, 64), (37, 90)])
def test_encoding_equals_the_stock_idefics3_processor(wh: tuple[int, int]) -> None:
    """The stock Idefics3Processor (it needs no torchvision) gives the same token ids and pixel values."""
    from transformers import Idefics3Processor

    a = Idefics3Adapter(*tiny_smolvlm(seed=0, flavor="idefics3"))
    proc = Idefics3Processor(
        image_processor=a.image_processor,
        tokenizer=a.tokenizer,
        image_seq_len=SMOL_TOKENS_PER_TILE,
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    image = noise_image(2, wh)
    prompt = a.chat_text(PROMPT)
    assert prompt == proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}],
        add_generation_prompt=True,
    )
    stock = proc(text=[prompt], images=[[image]], return_tensors="pt")
    ours, _ = a._encode([image], [prompt])
    assert torch.equal(ours["input_ids"], stock["input_ids"])
    assert torch.equal(ours["pixel_values"], stock["pixel_values"])
    assert torch.equal(ours["pixel_attention_mask"], stock["pixel_attention_mask"])


@pytest.mark.parametrize("wh", MARKER_ASPECTS)
def test_a_marker_lights_the_token_whose_box_holds_it(adapter: SmolVLMAdapter, wh: tuple[int, int]) -> None:
    """Independent of the adapter's arithmetic: a white square at a cell centre brightens, in the processor's own
    tiles, the token whose pixel box (``token_boxes``) holds it, in its tile and in the global image; and the map cell
    at that point (``grid.image_xyxy_to_cells``) is that tile token's sequence position."""
    rng = np.random.default_rng(sum(wh))
    grid = adapter.grid_for(wh)
    cw, ch = grid.cell_wh
    boxes = adapter.token_boxes(wh)
    views = adapter.views(wh)
    side = adapter.side
    pre = adapter.prefill(noise_image(2, wh), PROMPT, TARGET)
    image_pos = torch.nonzero(pre.input_ids == adapter.image_token_id).flatten().tolist()
    for _ in range(3):
        r, c = int(rng.integers(grid.rows)), int(rng.integers(grid.cols))
        centre = ((c + 0.5) * cw, (r + 0.5) * ch)
        bright = _token_brightness(adapter, _marker_image(wh, centre, (0.3 * cw, 0.3 * ch)))
        tile = next(v for v in views if v.kind == "tile" and (v.row, v.col) == (r // side, c // side))
        k = tile.token_start // SMOL_TOKENS_PER_TILE
        tr, tc = np.unravel_index(int(bright[k].argmax()), bright[k].shape)
        token = tile.token_start + int(tr) * side + int(tc)
        x0, y0, x1, y1 = boxes[token]
        assert x0 <= centre[0] < x1 and y0 <= centre[1] < y1
        cell = np.floor(grid.image_xyxy_to_cells(np.array([[*centre, *centre]]))[0, :2]).astype(int)  # (col, row)
        assert pre.visual_positions[int(cell[1]) * grid.cols + int(cell[0])] == image_pos[token]
    glob = views[-1]  # the global image: a marker at one of its own cell centres
    gw, gh = glob.grid.cell_wh
    r, c = int(rng.integers(side)), int(rng.integers(side))
    centre = ((c + 0.5) * gw, (r + 0.5) * gh)
    bright = _token_brightness(adapter, _marker_image(wh, centre, (0.3 * gw, 0.3 * gh)))[-1]
    tr, tc = np.unravel_index(int(bright.argmax()), bright.shape)
    x0, y0, x1, y1 = boxes[glob.token_start + int(tr) * side + int(tc)]
    assert x0 <= centre[0] < x1 and y0 <= centre[1] < y1


def test_pixel_shuffle_folds_scale_x_scale_patches_row_major(adapter: SmolVLMAdapter) -> None:
    """The model's own connector: output token (i, j) holds exactly patches (s i + a, s j + b), a, b < s."""
    n = SMOL_TILE_PX // adapter.patch_px  # 16 patches per side
    s = adapter.shuffle
    r, c = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    feats = torch.stack([r, c], dim=-1).float().view(1, n * n, 2)  # (1, n^2, 2): channel = the patch's (row, col)
    out = adapter.model.model.connector.pixel_shuffle(feats, scale_factor=s)  # (1, (n/s)^2, 2 s^2)
    assert out.shape == (1, adapter.side**2, 2 * s * s)
    for k in range(adapter.side**2):
        i, j = divmod(k, adapter.side)
        got = {tuple(int(x) for x in p) for p in out[0, k].view(s * s, 2).tolist()}
        assert got == {(s * i + a, s * j + b) for a in range(s) for b in range(s)}


def test_image_features_fill_the_tokens_in_view_order(adapter: SmolVLMAdapter) -> None:
    """SmolLM2 receives the connector's features of pixel_values[0, k] at the k-th run of <image> tokens."""
    image = noise_image(3, (300, 110))
    embeds, ids = _embeds_seen_by_lm(adapter, image)
    pixels, _ = adapter._pixel_inputs([image])
    with torch.no_grad():
        feats = adapter.model.model.get_image_features(**pixels).pooler_output[0]  # (V * s^2, d)
    assert feats.shape[0] == len(adapter.views(image.size)) * SMOL_TOKENS_PER_TILE
    image_pos = torch.nonzero(ids == adapter.image_token_id).flatten()
    torch.testing.assert_close(embeds[image_pos], feats)


# ---------------------------------------------------------------------------------------------- cache and kernels


def test_cache_values_equal_value_projection(adapter: SmolVLMAdapter) -> None:
    image = noise_image(4, (150, 90))
    pre = adapter.prefill(image, PROMPT, TARGET)
    hooked, ids = _hook_values(adapter, image)
    assert torch.equal(ids, pre.input_ids)
    assert len(pre.layer_values) == adapter.num_layers == 3
    for cached, ref in zip(pre.layer_values, hooked, strict=True):
        assert cached.shape == ref.shape == (adapter.num_kv_heads, len(ids), cached.shape[-1])
        torch.testing.assert_close(cached, ref, atol=1e-5, rtol=1e-5)
    assert adapter.num_kv_heads == 2 < adapter.model.config.text_config.num_attention_heads  # GQA, used as stored
    assert [adapter.tokenizer.convert_ids_to_tokens(int(ids[t])) for t in pre.target_positions] == ["Ġred", "Ġcard"]


def test_map_from_cache_equals_independent_fig7(adapter: SmolVLMAdapter) -> None:
    image = noise_image(5, (100, 240))
    pre = adapter.prefill(image, PROMPT, TARGET)
    ours = relevance_map(
        pre.layer_values[1:3], pre.target_positions, pre.visual_positions, RelevanceConfig(layers=(1, 3))
    )
    hooked, _ = _hook_values(adapter, image)
    want = fig7_reference(hooked[1:3], pre.target_positions, pre.visual_positions)
    np.testing.assert_allclose(ours, want, atol=1e-6)
    assert ours.shape == (pre.grid.rows * pre.grid.cols,)


def test_sdpa_and_eager_give_the_same_map() -> None:
    check_sdpa_equals_eager(lambda attn: SmolVLMAdapter(*tiny_smolvlm(seed=3, attn=attn)), noise_image(6, (140, 60)))


def test_batched_yes_no_equals_one_at_a_time(adapter: SmolVLMAdapter) -> None:
    """Crops of 4 sizes (3 to 9 views each): one left-padded batch, zero-padded tile rows, = one at a time."""
    check_batched_yes_no(adapter)


def test_image_prefix_cache_gives_the_full_prefill() -> None:
    adapter = SmolVLMAdapter(*tiny_smolvlm(seed=2))
    image = noise_image(7, (200, 120))
    questions = [(PROMPT, TARGET), ("Is there a blue card in the image?", "blue card")]
    full = [adapter.prefill(image, q, t) for q, t in questions]
    assert adapter.enable_image_cache(2)
    adapter.counter.reset()
    cached = [adapter.prefill(image, q, t) for q, t in questions * 2]
    assert adapter.counter.image_cache_hits == 3 and adapter.counter.counts["search"] == 4
    for ref, got in zip(full * 2, cached, strict=True):
        assert got.target_positions == ref.target_positions and got.visual_positions == ref.visual_positions
        assert got.yes_no_margin == pytest.approx(ref.yes_no_margin, abs=1e-4)
        for a, b in zip(ref.layer_values, got.layer_values, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("flavor", ["smolvlm", "idefics3"])
def test_loads_from_the_hub_layout(flavor: str, saved: Path, saved_v1: Path) -> None:
    """SmolVLM2 (model_type smolvlm) and SmolVLM v1 (model_type idefics3, e.g. SmolVLM-256M-Instruct) both load
    through load_adapter; the PIL image processor, SmolLM2's byte-level BPE, the template from chat_template.json."""
    path, cls, name = (
        (saved, SmolVLMAdapter, "SmolVLM") if flavor == "smolvlm" else (saved_v1, Idefics3Adapter, "Idefics3")
    )
    files = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert {"preprocessor_config.json", "processor_config.json", "chat_template.json"} <= files
    pre = json.loads((path / "preprocessor_config.json").read_text())
    assert (pre["image_processor_type"], pre["processor_class"]) == (f"{name}ImageProcessor", f"{name}Processor")
    assert pre["size"] == {"longest_edge": 4 * SMOL_TILE_PX} and pre["max_image_size"] == {"longest_edge": SMOL_TILE_PX}
    assert json.loads((path / "config.json").read_text())["model_type"] == flavor
    assert "chat_template" not in json.loads((path / "tokenizer_config.json").read_text())
    adapter: Any = load_adapter(path)
    assert type(adapter) is cls
    assert type(adapter.image_processor).__name__ == f"{name}ImageProcessorPil"  # no torchvision: the PIL backend
    assert adapter.tokenizer.tokenize(" Yes")[0] == "ĠYes"  # byte-level BPE
    assert adapter.chat_template == SMOLVLM_CHAT_TEMPLATE
    assert adapter.chat_text("hi", n_images=0) == "<|im_start|>User: hi<end_of_utterance>\nAssistant:"
    assert adapter.chat_text("hi") == "<|im_start|>User:<image>hi<end_of_utterance>\nAssistant:"
    assert config_for(adapter).rank.n_steps == 2  # the smolvlm preset for both model types
    # the reply's first token after "Assistant:" carries the space (adapter_checks.check_loaded_like_fresh expects
    # the bare "Yes" / "No" of the ChatML templates, so the rest of that check is written out here)
    assert adapter.tokenizer.convert_ids_to_tokens(list(adapter.yes_no_ids())) == ["ĠYes", "ĠNo"]
    fresh = cls(*tiny_smolvlm(seed=0, flavor=flavor))
    image = noise_image(8, (90, 60))
    want, got = fresh.prefill(image, PROMPT, TARGET), adapter.prefill(image, PROMPT, TARGET)
    assert torch.equal(want.input_ids, got.input_ids)
    torch.testing.assert_close(want.layer_values[-1], got.layer_values[-1])


def test_a_processor_at_another_tile_size_is_refused() -> None:
    model, ip, tok = tiny_smolvlm(seed=0)
    ip.max_image_size = {"longest_edge": 2 * SMOL_TILE_PX}
    with pytest.raises(ModelLoadError, match="cuts 128-px tiles but the vision tower takes 64 px"):
        SmolVLMAdapter(model, ip, tok)


@pytest.mark.parametrize("wh", [(300, 100), (120, 80)])
def test_row_col_and_global_tags_as_plain_text(wh: tuple[int, int]) -> None:
    """SmolVLM-Instruct's tokenizer has no <row_r_col_c> / <global-img> specials: the tags become text tokens (as in
    the stock processor), the <image> runs and the map are unchanged."""
    from transformers import Idefics3Processor

    a = Idefics3Adapter(*tiny_smolvlm(seed=0, flavor="idefics3", layout_specials=False))
    assert a.tokenizer.convert_tokens_to_ids("<global-img>") == a.tokenizer.unk_token_id
    proc = Idefics3Processor(image_processor=a.image_processor, tokenizer=a.tokenizer, image_seq_len=16)
    image = noise_image(15, wh)
    prompt = a.chat_text(PROMPT)
    ours, _ = a._encode([image], [prompt])
    assert torch.equal(ours["input_ids"], proc(text=[prompt], images=[[image]], return_tensors="pt")["input_ids"])
    pre = a.prefill(image, PROMPT, TARGET)
    image_pos = torch.nonzero(pre.input_ids == a.image_token_id).flatten()
    runs = image_pos.view(len(a.views(wh)), SMOL_TOKENS_PER_TILE)
    assert (runs[:, -1] - runs[:, 0] == SMOL_TOKENS_PER_TILE - 1).all()
    before_global = a.tokenizer.decode(pre.input_ids[runs[-1][0] - 12 : runs[-1][0]])
    assert before_global.endswith("<fake_token_around_image><global-img>")  # the tag as several text tokens
    assert a.tokenizer.convert_ids_to_tokens(int(pre.input_ids[runs[-1][0] - 1])) != "<global-img>"
    assert set(pre.visual_positions) == set(image_pos.tolist()) - set(runs[-1].tolist())


def test_an_image_processor_without_splitting_is_refused() -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    model, _, tok = tiny_smolvlm(seed=0)
    with pytest.raises(ModelLoadError, match="not the Idefics3 / SmolVLM image processor"):
        SmolVLMAdapter(model, Qwen2VLImageProcessorPil(), tok)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_smaller_longest_edge_gives_fewer_tiles(n: int) -> None:
    """size.longest_edge = n tiles (the model cards' knob for less compute): the grid follows the processor."""
    model, ip, tok = tiny_smolvlm(seed=0)
    ip.size = {"longest_edge": n * SMOL_TILE_PX}
    adapter = SmolVLMAdapter(model, ip, tok)
    for wh in [(240, 160), (600, 200), (37, 90)]:
        meta = ip(images=[[noise_image(13, wh)]], return_tensors="pt", return_row_col_info=True)
        assert adapter.tile_grid(wh) == (int(meta["cols"][0][0]), int(meta["rows"][0][0]))
        assert max(adapter.tile_grid(wh)) == (n if n > 1 else 0)
    pre = adapter.prefill(noise_image(14, (240, 160)), PROMPT, TARGET)
    assert len(pre.visual_positions) == pre.grid.rows * pre.grid.cols


def test_without_image_splitting_the_global_image_is_the_map() -> None:
    model, ip, tok = tiny_smolvlm(seed=0)
    ip.do_image_splitting = False
    adapter = SmolVLMAdapter(model, ip, tok)
    wh = (300, 100)
    assert adapter.tile_grid(wh) == (0, 0) and [v.kind for v in adapter.views(wh)] == ["global"]
    pre = adapter.prefill(noise_image(12, wh), PROMPT, TARGET)
    image_pos = torch.nonzero(pre.input_ids == adapter.image_token_id).flatten().tolist()
    assert pre.visual_positions == image_pos and (pre.grid.rows, pre.grid.cols) == (adapter.side, adapter.side)
    assert_cells_tile_image(pre.grid, len(pre.visual_positions))


def test_zoom_cli_end_to_end(saved_v1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`focus zoom IMG -t ... --model TINYDIR --json` on the SmolVLM-256M-Instruct layout: boxes inside the image."""
    wh = (300, 100)  # 3:1
    path = tmp_path / "wide.png"
    noise_image(9, wh).save(path)
    code = main(["zoom", str(path), "-t", "red card", "--model", str(saved_v1), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = FocusResult.model_validate_json(out)
    assert result.regions and result.forward_passes.search >= 2
    for r in result.regions:
        x0, y0, x1, y1 = r.box
        assert 0 <= x0 < x1 <= wh[0] and 0 <= y0 < y1 <= wh[1]


def test_pipeline_on_a_tall_image(saved: Path) -> None:
    adapter = load_adapter(saved)
    cfg = config_for(adapter)
    assert cfg.relevance.layers is None and (cfg.relevance.smooth_sigma, cfg.relevance.downsample) == (1.0, 1)
    assert (cfg.proposal.s_max, cfg.rank.max_overrun, cfg.answer.max_crops) == (9, 4, 4)
    result = zoom_with_boxes_inside(adapter, cfg, noise_image(10, (100, 300)))
    assert result.relevance_maps[0].rows == adapter.grid_for((100, 300)).rows


# ---------------------------------------------------------------------------------------------- multi-image answer


def test_interleaved_prompt_keeps_the_order(adapter: SmolVLMAdapter) -> None:
    images, prompt = adapter._interleaved_prompt(interleaved_parts())
    assert len(images) == 3
    assert prompt == (
        "<|im_start|>User:<image>" + CAPTIONS[0] + "\n<image>" + CAPTIONS[1] + "\n<image>" + CAPTIONS[2] + "\n"
        + PROMPT + "<end_of_utterance>\nAssistant:"
    )  # fmt: skip
    no_template = SmolVLMAdapter(adapter.model, adapter.image_processor, adapter.tokenizer)
    no_template.chat_template = None
    assert no_template._interleaved_prompt(interleaved_parts())[1] == prompt
    assert no_template.chat_text("hi") == adapter.chat_text("hi")
    assert no_template.chat_text("hi", n_images=0) == adapter.chat_text("hi", n_images=0)


def test_generate_interleaved_splits_each_image(adapter: SmolVLMAdapter) -> None:
    """Each image of the turn is split on its own: its own layout string, one row of tiles per image."""
    parts = interleaved_parts()
    images, prompt = adapter._interleaved_prompt(parts)
    enc = adapter._encode_interleaved(images, prompt)
    views = [len(adapter.views(im.size)) for im in images]
    assert tuple(enc["pixel_values"].shape[:2]) == (3, max(views))
    assert int((enc["input_ids"] == adapter.image_token_id).sum()) == SMOL_TOKENS_PER_TILE * sum(views)
    globals_ = (enc["input_ids"] == adapter.tokenizer.convert_tokens_to_ids("<global-img>")).sum()
    assert int(globals_) == 3
    adapter.counter.reset()
    with adapter.counter.in_phase("answer"):
        reply = adapter.generate_interleaved(parts, max_new_tokens=3)
    assert isinstance(reply, str) and adapter.counter.counts == {"search": 0, "answer": 1, "extraction": 0}


def test_option_log_likelihoods_equal_manual_scores(adapter: SmolVLMAdapter) -> None:
    check_option_log_likelihoods(adapter)


def test_yes_no_margins_interleaved_equal_manual_margins(adapter: SmolVLMAdapter) -> None:
    check_yes_no_margins_interleaved(adapter)
    image = noise_image(23, (40, 90))
    torch.testing.assert_close(
        adapter.yes_no_margins_interleaved([[image, PROMPT]]), adapter.yes_no_margins([image], [PROMPT])
    )


@pytest.mark.parametrize("wh", [(2246, 1582), (1800, 600), (600, 1800)])
def test_real_tile_size_gives_64_tokens_per_tile(wh: tuple[int, int]) -> None:
    """At SmolVLM-256M's settings (512-px tiles of 16-px patches, pixel shuffle 4, long side 2048): 8 x 8 = 64 tokens
    per view, the V*-sized image gets 4 x 3 tiles + global (13 x 64 tokens, a 24 x 32 map), and a marker lights the
    token whose box holds it in the processor's own tiles."""
    adapter = SmolVLMAdapter(*tiny_smolvlm(seed=0, tile_px=512, patch_px=16))
    assert (adapter.side, adapter.longest_edge, int(adapter.model.model.image_seq_len)) == (8, 2048, 64)
    cols, rows = adapter.tile_grid(wh)
    meta = adapter.image_processor(images=[[noise_image(11, wh)]], return_tensors="pt", return_row_col_info=True)
    assert (int(meta["cols"][0][0]), int(meta["rows"][0][0])) == (cols, rows)
    if wh == (2246, 1582):
        assert (cols, rows) == (4, 3) and adapter.num_image_tokens(wh) == 13 * 64
    grid = adapter.grid_for(wh)
    assert (grid.rows, grid.cols) == (8 * rows, 8 * cols)
    cw, ch = grid.cell_wh
    r, c = grid.rows - 3, 5
    centre = ((c + 0.5) * cw, (r + 0.5) * ch)
    bright = _token_brightness(adapter, _marker_image(wh, centre, (0.3 * cw, 0.3 * ch)))
    tile = adapter.views(wh)[(r // 8) * cols + c // 8]
    k = tile.token_start // 64
    tr, tc = np.unravel_index(int(bright[k].argmax()), bright[k].shape)
    x0, y0, x1, y1 = adapter.token_boxes(wh)[tile.token_start + int(tr) * 8 + int(tc)]
    assert x0 <= centre[0] < x1 and y0 <= centre[1] < y1
    assert adapter.map_token_indices(wh)[r, c] == tile.token_start + int(tr) * 8 + int(tc)
