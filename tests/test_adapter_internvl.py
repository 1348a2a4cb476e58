"""The InternVL3 adapter on a tiny random model: tile layout vs the processor's own tiles and the model's own pixel
shuffle, token -> pixel boxes found by a marker, cache parity, Fig. 7 reference, SDPA = eager, batching, hub-layout
loading, the image-prefix cache, the multi-image answer and `focus zoom` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from focus_tool.adapters.internvl import InternVLAdapter
from focus_tool.adapters.registry import load_adapter
from focus_tool.cli import main
from focus_tool.errors import ModelLoadError
from focus_tool.presets import config_for
from focus_tool.result import FocusResult
from tests.adapter_checks import (
    ASPECTS,
    CAPTIONS,
    PROMPT,
    TARGET,
    assert_cells_tile_image,
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
    zoom_with_boxes_inside,
)
from tests.tiny_internvl import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERNVL_CHAT_TEMPLATE,
    IVL_TILE_PX,
    IVL_TOKENS_PER_TILE,
    save_tiny_internvl,
    tiny_internvl,
)

# 3:2, 2:3, 1:1, 3:1, 1:3, and the shared odd / extreme sizes
MARKER_ASPECTS = [(240, 160), (160, 240), (150, 150), (600, 200), (200, 600), (37, 90), (1600, 200)]


@pytest.fixture(scope="module")
def adapter() -> InternVLAdapter:
    return InternVLAdapter(*tiny_internvl(seed=0), model_id="tiny-internvl")


@pytest.fixture(scope="session")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_internvl(tmp_path_factory.mktemp("internvl") / "InternVL3-1B-hf")


def _token_brightness(adapter: InternVLAdapter, image: Image.Image) -> np.ndarray:
    """(views, side, side) mean brightness of each token's 28-px block (2 x 2 patches) in the processor's tiles."""
    pix = adapter.image_processor(images=[image], crop_to_patches=True, return_tensors="pt")["pixel_values"]
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    gray = (pix * std + mean).mean(1)  # (V, T, T) back in [0, 1]
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


# ---------------------------------------------------------------------------------------------- layout and geometry


@pytest.mark.parametrize("wh", sorted(set(ASPECTS) | set(MARKER_ASPECTS)))
def test_token_counts_and_tiles_follow_the_processor(adapter: InternVLAdapter, wh: tuple[int, int]) -> None:
    """Tiles = the processor's num_patches (its own get_number_of_image_patches agrees); 256-per-tile tokens (here
    16) wrapped in <img> </img>; the processor's tiles are crops of the image resized to the tile grid, row-major,
    and the thumbnail (last) is the whole image resized to one tile."""
    image = noise_image(1, wh)
    ip = adapter.image_processor
    meta = ip(images=[image], crop_to_patches=True, return_tensors="pt")
    n_views = int(meta["num_patches"][0])
    h, w = wh[1], wh[0]
    assert n_views == ip.get_number_of_image_patches(h, w, {"crop_to_patches": True}) == len(adapter.views(wh))
    cols, rows = adapter.tile_grid(wh)
    assert n_views == (cols * rows + 1 if cols * rows > 1 else 1)
    assert 1 <= cols * rows <= 12
    # the tiles the processor made are the image resized (stretched) to cols x rows tiles, cut row-major
    from transformers.image_utils import SizeDict

    arr = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    resized = ip.resize(arr, SizeDict(height=rows * IVL_TILE_PX, width=cols * IVL_TILE_PX), resample=ip.resample)
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    tiles = meta["pixel_values"].numpy() * std + mean  # (V, 3, T, T) in [0, 1]
    t = IVL_TILE_PX
    for v in adapter.views(wh):
        k = v.token_start // IVL_TOKENS_PER_TILE
        if v.kind == "tile":
            want = resized[:, v.row * t : (v.row + 1) * t, v.col * t : (v.col + 1) * t] / 255.0
        else:
            assert k == n_views - 1  # the thumbnail comes last
            want = ip.resize(arr, SizeDict(height=t, width=t), resample=ip.resample) / 255.0
        np.testing.assert_allclose(tiles[k], want, atol=1e-5)
    pre = adapter.prefill(image, PROMPT, TARGET)
    ids = pre.input_ids
    n_image = int((ids == adapter.image_token_id).sum())
    assert n_image == n_views * adapter.model.config.image_seq_length == adapter.num_image_tokens(wh)
    image_pos = torch.nonzero(ids == adapter.image_token_id).flatten()
    start = adapter.tokenizer.convert_tokens_to_ids("<img>")
    end = adapter.tokenizer.convert_tokens_to_ids("</img>")
    assert int(ids[image_pos[0] - 1]) == start and int(ids[image_pos[-1] + 1]) == end
    assert int(image_pos[-1] - image_pos[0]) + 1 == n_image  # one contiguous run
    grid = pre.grid
    assert (grid.rows, grid.cols) == (rows * adapter.side, cols * adapter.side)
    assert_cells_tile_image(grid, len(pre.visual_positions))
    thumb = set(image_pos[cols * rows * IVL_TOKENS_PER_TILE :].tolist())
    assert len(thumb) == (IVL_TOKENS_PER_TILE if n_views > 1 else 0)
    assert set(pre.visual_positions) == set(image_pos.tolist()) - thumb  # every tile token once, no thumbnail


@pytest.mark.parametrize("wh", MARKER_ASPECTS)
def test_a_marker_lights_the_token_whose_box_holds_it(adapter: InternVLAdapter, wh: tuple[int, int]) -> None:
    """Independent of the adapter's arithmetic: a white square placed at a cell centre brightens, in the processor's
    own tiles, the token whose pixel box (``token_boxes``) holds it, in its tile and in the thumbnail; and the map
    cell at that point (``grid.image_xyxy_to_cells``) is that tile token's sequence position."""
    rng = np.random.default_rng(hash(wh) % 2**32)
    grid = adapter.grid_for(wh)
    cw, ch = grid.cell_wh
    boxes = adapter.token_boxes(wh)
    views = adapter.views(wh)
    pre = adapter.prefill(noise_image(2, wh), PROMPT, TARGET)
    image_pos = torch.nonzero(pre.input_ids == adapter.image_token_id).flatten().tolist()
    for _ in range(3):
        r, c = int(rng.integers(grid.rows)), int(rng.integers(grid.cols))
        centre = ((c + 0.5) * cw, (r + 0.5) * ch)
        bright = _token_brightness(adapter, _marker_image(wh, centre, (0.3 * cw, 0.3 * ch)))
        tile = next(v for v in views if v.kind == "tile" and (v.row, v.col) == (r // adapter.side, c // adapter.side))
        k = tile.token_start // IVL_TOKENS_PER_TILE
        tr, tc = np.unravel_index(int(bright[k].argmax()), bright[k].shape)
        token = tile.token_start + int(tr) * adapter.side + int(tc)
        x0, y0, x1, y1 = boxes[token]
        assert x0 <= centre[0] < x1 and y0 <= centre[1] < y1
        cell = np.floor(grid.image_xyxy_to_cells(np.array([[*centre, *centre]]))[0, :2]).astype(int)  # (col, row)
        assert pre.visual_positions[int(cell[1]) * grid.cols + int(cell[0])] == image_pos[token]
    if len(views) > 1:  # the thumbnail: a marker at one of its own cell centres
        thumb = views[-1]
        tw, th = thumb.grid.cell_wh
        r, c = int(rng.integers(adapter.side)), int(rng.integers(adapter.side))
        centre = ((c + 0.5) * tw, (r + 0.5) * th)
        bright = _token_brightness(adapter, _marker_image(wh, centre, (0.3 * tw, 0.3 * th)))[-1]
        tr, tc = np.unravel_index(int(bright.argmax()), bright.shape)
        x0, y0, x1, y1 = boxes[thumb.token_start + int(tr) * adapter.side + int(tc)]
        assert x0 <= centre[0] < x1 and y0 <= centre[1] < y1


def test_pixel_shuffle_folds_2x2_patches_row_major(adapter: InternVLAdapter) -> None:
    """The model's own pixel_shuffle: output token (i, j) holds exactly patches (2i + a, 2j + b), row-major."""
    n = IVL_TILE_PX // adapter.patch_px  # 8 patches per side
    r, c = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    feats = torch.stack([r, c], dim=-1).float()[None]  # (1, n, n, 2): channel = the patch's (row, col)
    out = adapter.model.model.pixel_shuffle(feats, scale_factor=0.5)  # (1, n/2, n/2, 8)
    assert out.shape == (1, adapter.side, adapter.side, 8)
    for i in range(adapter.side):
        for j in range(adapter.side):
            got = {tuple(int(x) for x in p) for p in out[0, i, j].view(4, 2).tolist()}
            assert got == {(2 * i + a, 2 * j + b) for a in (0, 1) for b in (0, 1)}


def test_image_features_fill_the_tokens_in_tile_order(adapter: InternVLAdapter) -> None:
    """The language model receives the projector's features of pixel_values[k] at the k-th 256-token run."""
    image = noise_image(3, (300, 110))
    embeds, ids = capture_inputs_embeds(adapter, image)
    pixels, _ = adapter._pixel_inputs([image])
    with torch.no_grad():
        feats = adapter.model.model.get_image_features(pixel_values=pixels["pixel_values"]).pooler_output  # (V, s^2, d)
    assert feats.shape[:2] == (len(adapter.views(image.size)), IVL_TOKENS_PER_TILE)
    image_pos = torch.nonzero(ids == adapter.image_token_id).flatten()
    torch.testing.assert_close(embeds[image_pos], feats.reshape(-1, feats.shape[-1]))


# ---------------------------------------------------------------------------------------------- cache and kernels


def test_cache_values_equal_value_projection(adapter: InternVLAdapter) -> None:
    image = noise_image(4, (150, 90))
    pre = adapter.prefill(image, PROMPT, TARGET)
    hooked, ids = hook_values(adapter, image)
    assert torch.equal(ids, pre.input_ids)
    assert len(pre.layer_values) == adapter.num_layers == 3
    for cached, ref in zip(pre.layer_values, hooked, strict=True):
        assert cached.shape == ref.shape == (adapter.num_kv_heads, len(ids), cached.shape[-1])
        torch.testing.assert_close(cached, ref, atol=1e-5, rtol=1e-5)
    assert adapter.num_kv_heads == 2 < adapter.model.config.text_config.num_attention_heads  # GQA, used as stored
    assert [adapter.tokenizer.convert_ids_to_tokens(int(ids[t])) for t in pre.target_positions] == ["Ġred", "Ġcard"]


def test_map_from_cache_equals_independent_fig7(adapter: InternVLAdapter) -> None:
    ours, pre = map_equal_to_fig7(adapter, noise_image(5, (100, 240)))
    assert ours.shape == (pre.grid.rows * pre.grid.cols,)


def test_sdpa_and_eager_give_the_same_map() -> None:
    check_sdpa_equals_eager(lambda attn: InternVLAdapter(*tiny_internvl(seed=3, attn=attn)), noise_image(6, (140, 60)))


def test_batched_yes_no_equals_one_at_a_time(adapter: InternVLAdapter) -> None:
    check_batched_yes_no(adapter)  # crops of 4 sizes: 1 to 10 tiles each, all in one pixel_values


def test_image_prefix_cache_gives_the_full_prefill() -> None:
    adapter = InternVLAdapter(*tiny_internvl(seed=2))
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


def test_loads_from_the_hub_layout(saved: Path) -> None:
    files = {p.name for p in saved.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert {"preprocessor_config.json", "processor_config.json", "chat_template.json"} <= files
    pre = json.loads((saved / "preprocessor_config.json").read_text())
    assert (pre["image_processor_type"], pre["processor_class"]) == ("GotOcr2ImageProcessorFast", "InternVLProcessor")
    assert pre["crop_to_patches"] is False  # as on the hub: the processor, not this file, turns tiling on
    assert json.loads((saved / "config.json").read_text())["model_type"] == "internvl"
    adapter = load_adapter(saved)
    assert isinstance(adapter, InternVLAdapter)
    assert type(adapter.image_processor).__name__ == "GotOcr2ImageProcessorPil"  # no torchvision: the PIL backend
    assert type(adapter.tokenizer).__name__ == "Qwen2Tokenizer"
    assert adapter.tokenizer.context_image_token == "<IMG_CONTEXT>"  # the named extra tokens survive the round trip
    assert adapter.chat_template == INTERNVL_CHAT_TEMPLATE
    assert (
        adapter.chat_text("hi") == "<|im_start|>user\n<img><IMG_CONTEXT></img>\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert len(adapter.views((600, 200))) > 1  # tiles although the file says crop_to_patches: false
    check_loaded_like_fresh(adapter, InternVLAdapter(*tiny_internvl(seed=0)), noise_image(8, (90, 60)))


def test_a_processor_at_another_tile_size_is_refused() -> None:
    model, ip, tok = tiny_internvl(seed=0)
    ip.size = {"height": 2 * IVL_TILE_PX, "width": 2 * IVL_TILE_PX}
    with pytest.raises(ModelLoadError, match="tiles at 224 x 224 px but the vision tower takes 112 px"):
        InternVLAdapter(model, ip, tok)


def test_an_image_processor_without_tiling_is_refused() -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    model, _, tok = tiny_internvl(seed=0)
    with pytest.raises(ModelLoadError, match="not the GotOcr2 tiling image processor"):
        InternVLAdapter(model, Qwen2VLImageProcessorPil(), tok)


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


def test_pipeline_on_a_tall_image(saved: Path) -> None:
    adapter = load_adapter(saved)
    cfg = config_for(adapter)
    assert cfg.relevance.layers is None  # [21, 28) exceeds the tiny model's 3 layers: [O//2, O)
    assert (cfg.relevance.smooth_sigma, cfg.relevance.downsample) == (1.0, 2)
    result = zoom_with_boxes_inside(adapter, cfg, noise_image(10, (100, 300)))
    assert result.relevance_maps[0].rows == -(-adapter.grid_for((100, 300)).rows // 2)


# ---------------------------------------------------------------------------------------------- multi-image answer


def test_interleaved_prompt_keeps_the_order(adapter: InternVLAdapter) -> None:
    images, prompt = adapter._interleaved_prompt(interleaved_parts())
    block = "<img><IMG_CONTEXT></img>\n"
    assert len(images) == 3
    assert prompt == (
        "<|im_start|>user\n" + block + CAPTIONS[0] + "\n" + block + CAPTIONS[1] + "\n" + block + CAPTIONS[2]
        + "\n" + PROMPT + "<|im_end|>\n<|im_start|>assistant\n"
    )  # fmt: skip
    no_template = InternVLAdapter(adapter.model, adapter.image_processor, adapter.tokenizer)
    no_template.chat_template = None
    assert no_template._interleaved_prompt(interleaved_parts())[1] == prompt
    assert no_template.chat_text("hi") == adapter.chat_text("hi")


def test_generate_interleaved_tiles_each_image(adapter: InternVLAdapter) -> None:
    """Each image of the turn is tiled on its own: one <img> block of 256 x its views, all tiles in pixel_values."""
    parts = interleaved_parts()
    images, prompt = adapter._interleaved_prompt(parts)
    enc = adapter._encode_interleaved(images, prompt)
    views = [len(adapter.views(im.size)) for im in images]
    assert enc["pixel_values"].shape[0] == sum(views)
    assert int((enc["input_ids"] == adapter.image_token_id).sum()) == IVL_TOKENS_PER_TILE * sum(views)
    adapter.counter.reset()
    with adapter.counter.in_phase("answer"):
        reply = adapter.generate_interleaved(parts, max_new_tokens=3)
    assert isinstance(reply, str) and adapter.counter.counts == {"search": 0, "answer": 1, "extraction": 0}


def test_option_log_likelihoods_equal_manual_scores(adapter: InternVLAdapter) -> None:
    check_option_log_likelihoods(adapter)


def test_yes_no_margins_interleaved_equal_manual_margins(adapter: InternVLAdapter) -> None:
    check_yes_no_margins_interleaved(adapter)
    image = noise_image(23, (40, 90))
    torch.testing.assert_close(
        adapter.yes_no_margins_interleaved([[image, PROMPT]]), adapter.yes_no_margins([image], [PROMPT])
    )


@pytest.mark.parametrize("wh", [(2246, 1582), (1800, 600), (600, 1800)])
def test_real_tile_size_gives_256_tokens_per_tile(wh: tuple[int, int]) -> None:
    """At the checkpoints' 448-px tiles: 32 x 32 patches -> 16 x 16 = 256 tokens per view, the V*-sized image gets
    3 x 2 tiles + thumbnail (7 x 256 tokens, a 32 x 48 map), and a marker lights the token whose box holds it."""
    adapter = InternVLAdapter(*tiny_internvl(seed=0, tile_px=448))
    assert (adapter.side, adapter.model.config.image_seq_length) == (16, 256)
    cols, rows = adapter.tile_grid(wh)
    meta = adapter.image_processor(images=[noise_image(11, wh)], crop_to_patches=True, return_tensors="pt")
    assert int(meta["num_patches"][0]) == len(adapter.views(wh)) == cols * rows + 1
    if wh == (2246, 1582):
        assert (cols, rows) == (3, 2) and adapter.num_image_tokens(wh) == 7 * 256
    grid = adapter.grid_for(wh)
    assert (grid.rows, grid.cols) == (16 * rows, 16 * cols)
    cw, ch = grid.cell_wh
    r, c = grid.rows - 3, 5
    centre = ((c + 0.5) * cw, (r + 0.5) * ch)
    bright = _token_brightness(adapter, _marker_image(wh, centre, (0.3 * cw, 0.3 * ch)))
    tile = adapter.views(wh)[(r // 16) * cols + c // 16]
    k = tile.token_start // 256
    tr, tc = np.unravel_index(int(bright[k].argmax()), bright[k].shape)
    x0, y0, x1, y1 = adapter.token_boxes(wh)[tile.token_start + int(tr) * 16 + int(tc)]
    assert x0 <= centre[0] < x1 and y0 <= centre[1] < y1
    assert adapter.map_token_indices(wh)[r, c] == tile.token_start + int(tr) * 16 + int(tc)
