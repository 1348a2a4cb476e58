"""The Gemma 3 adapter on a tiny random model: encoding vs the stock Gemma3Processor, square-resize geometry and token
-> pixel boxes found by a marker, the projector's own pooling order, pan-and-scan views, bidirectional image blocks,
the sliding-window cache, cache parity, Fig. 7 reference, SDPA = eager, batching, hub-layout loading, the image-prefix
cache, the multi-image answer and `focus zoom` end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from focus_tool.adapters.gemma3 import Gemma3Adapter
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
from tests.tiny_gemma3 import (
    G3_IMAGE_PX,
    G3_PAN_AND_SCAN,
    G3_SIDE,
    G3_SLIDING_WINDOW,
    GEMMA3_CHAT_TEMPLATE,
    save_tiny_gemma3,
    tiny_gemma3,
)

# 3:2, 2:3, 1:1, 3:1, 1:3, and the shared odd / extreme sizes
MARKER_ASPECTS = [(240, 160), (160, 240), (150, 150), (600, 200), (200, 600), (37, 90), (1600, 200)]
# pan-and-scan: 3:1 and 1:3 (3 crops), 5:3 (2), 5.2:1 (4, the cap), 1:1 and a small 3:1 (none: below 256-px crops)
PAS_SIZES = [(1800, 600), (600, 1800), (1000, 600), (2600, 500), (700, 700), (600, 200)]
SIDE = G3_SIDE  # tiny: 224 px / 14-px patches / 2 x 2 pooling


@pytest.fixture(scope="module")
def adapter() -> Gemma3Adapter:
    return Gemma3Adapter(*tiny_gemma3(seed=0), model_id="tiny-gemma3")


@pytest.fixture(scope="module")
def pas_adapter() -> Gemma3Adapter:
    return Gemma3Adapter(*tiny_gemma3(seed=0, pan_and_scan=True), model_id="tiny-gemma3-pas")


@pytest.fixture(scope="session")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_gemma3(tmp_path_factory.mktemp("gemma3") / "gemma-3-4b-it")


def _stock_processor(adapter: Gemma3Adapter):
    """transformers' own Gemma3Processor around the adapter's image processor and tokenizer."""
    from transformers import Gemma3Processor

    return Gemma3Processor(
        image_processor=adapter.image_processor,
        tokenizer=adapter.tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=adapter.side**2,
    )


def _stock_encode(adapter: Gemma3Adapter, images: list[Image.Image], text: str, **kwargs) -> dict:
    """The stock processor's ``apply_chat_template`` of one user turn: the images, then ``text``."""
    content = [{"type": "image", "image": im} for im in images] + [{"type": "text", "text": text}]
    return _stock_processor(adapter).apply_chat_template(
        [{"role": "user", "content": content}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        **kwargs,
    )


def _view_brightness(adapter: Gemma3Adapter, image: Image.Image) -> np.ndarray:
    """(views, side, side) mean brightness of each soft token's pooled block of patches in the processor's
    own pixel_values."""
    pix, _ = adapter._pixel_inputs([image])
    gray = (pix["pixel_values"] * 0.5 + 0.5).mean(1)  # (V, px, px) back in [0, 1]
    block = adapter.patch_px * adapter.pool
    v, t, _ = gray.shape
    return gray.view(v, t // block, block, t // block, block).mean((2, 4)).numpy()


def _marker_image(wh: tuple[int, int], centre: tuple[float, float], half: tuple[float, float]) -> Image.Image:
    """Grey image with a white rectangle of half-size ``half`` about ``centre`` (image pixels)."""
    arr = np.full((wh[1], wh[0], 3), 96, dtype=np.uint8)
    x0, x1 = int(np.floor(centre[0] - half[0])), int(np.ceil(centre[0] + half[0]))
    y0, y1 = int(np.floor(centre[1] - half[1])), int(np.ceil(centre[1] + half[1]))
    arr[max(y0, 0) : y1, max(x0, 0) : x1] = 255
    return Image.fromarray(arr)


def _runs(ids: torch.Tensor, token_id: int) -> list[tuple[int, int]]:
    """(start, length) of every run of ``token_id`` in ``ids``."""
    pos = torch.nonzero(ids == token_id).flatten().tolist()
    runs: list[tuple[int, int]] = []
    for p in pos:
        if runs and p == runs[-1][0] + runs[-1][1]:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return runs


# ---------------------------------------------------------------------------------------------- layout and geometry


@pytest.mark.parametrize("wh", sorted(set(ASPECTS) | set(MARKER_ASPECTS)))
def test_encoding_equals_the_stock_processor_and_the_view_is_the_stretched_image(
    adapter: Gemma3Adapter, wh: tuple[int, int]
) -> None:
    """input_ids, token_type_ids and pixel_values equal transformers' Gemma3Processor (one <bos>); one view, the
    whole image resized to the square without padding; 64 soft tokens (256 on the real checkpoints) between
    <start_of_image> and <end_of_image> with blank lines around; the map grid spans the image."""
    image = noise_image(1, wh)
    enc, _ = adapter._encode([image], [adapter.chat_text(PROMPT)])
    stock = _stock_encode(adapter, [image], PROMPT)
    assert torch.equal(enc["input_ids"], stock["input_ids"])
    assert torch.equal(enc["token_type_ids"], stock["token_type_ids"])
    torch.testing.assert_close(enc["pixel_values"], stock["pixel_values"])
    ip = adapter.image_processor
    from transformers.image_utils import SizeDict

    arr = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    want = ip.resize(arr, SizeDict(height=G3_IMAGE_PX, width=G3_IMAGE_PX), resample=ip.resample) / 255.0
    np.testing.assert_allclose(enc["pixel_values"][0].numpy() * 0.5 + 0.5, want, atol=1e-5)  # stretched, no pad
    ids = enc["input_ids"][0]
    tok = adapter.tokenizer
    assert int(ids[0]) == tok.bos_token_id and int((ids == tok.bos_token_id).sum()) == 1
    assert _runs(ids, adapter.image_token_id) == [(_runs(ids, adapter.image_token_id)[0][0], SIDE * SIDE)]
    start = _runs(ids, adapter.image_token_id)[0][0]
    assert tok.convert_ids_to_tokens(int(ids[start - 1])) == "<start_of_image>"
    assert tok.convert_ids_to_tokens(int(ids[start + SIDE * SIDE])) == "<end_of_image>"
    pre = adapter.prefill(image, PROMPT, TARGET)
    assert (pre.grid.rows, pre.grid.cols) == (SIDE, SIDE) and pre.grid.view_xyxy == (0.0, 0.0, *map(float, wh))
    assert pre.visual_positions == list(range(start, start + SIDE * SIDE))
    assert_cells_tile_image(pre.grid, len(pre.visual_positions))
    assert adapter.num_image_tokens(wh) == SIDE * SIDE == adapter.model.config.mm_tokens_per_image


@pytest.mark.parametrize("wh", MARKER_ASPECTS)
def test_a_marker_lights_the_token_whose_box_holds_it(adapter: Gemma3Adapter, wh: tuple[int, int]) -> None:
    """Independent of the adapter's arithmetic: a white square at a cell centre brightens, in the processor's own
    pixels, the pooled block whose token box (``token_boxes``) holds it; the map cell at that point is that token."""
    rng = np.random.default_rng(sum(wh))
    grid = adapter.grid_for(wh)
    cw, ch = grid.cell_wh
    boxes = adapter.token_boxes(wh)
    pre = adapter.prefill(noise_image(2, wh), PROMPT, TARGET)
    for _ in range(3):
        r, c = int(rng.integers(grid.rows)), int(rng.integers(grid.cols))
        centre = ((c + 0.5) * cw, (r + 0.5) * ch)
        bright = _view_brightness(adapter, _marker_image(wh, centre, (0.3 * cw, 0.3 * ch)))[0]
        tr, tc = np.unravel_index(int(bright.argmax()), bright.shape)
        token = int(tr) * adapter.side + int(tc)
        x0, y0, x1, y1 = boxes[token]
        assert x0 <= centre[0] < x1 and y0 <= centre[1] < y1
        cell = np.floor(grid.image_xyxy_to_cells(np.array([[*centre, *centre]]))[0, :2]).astype(int)  # (col, row)
        assert int(cell[1]) * grid.cols + int(cell[0]) == token
        assert pre.visual_positions[token] == pre.visual_positions[0] + token


def test_the_projector_pools_patch_blocks_row_major(adapter: Gemma3Adapter) -> None:
    """The model's own projector: its average pool sees SigLIP's patches row-major and soft token i * side + j is
    block (i, j): perturbing only that block's patches changes only that output token (tiny: 2 x 2 blocks; the
    896-px build pools 4 x 4, checked in test_real_size_gives_256_soft_tokens)."""
    proj = adapter.model.model.multi_modal_projector
    p = G3_IMAGE_PX // adapter.patch_px  # 16 patches per side
    r, c = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    hidden = adapter.model.config.vision_config.hidden_size
    feats = torch.zeros(1, p * p, hidden)
    feats[0, :, 0], feats[0, :, 1] = r.flatten().float(), c.flatten().float()  # channel = the patch's (row, col)
    seen: dict[str, torch.Tensor] = {}
    handle = proj.avg_pool.register_forward_hook(lambda _m, _i, o: seen.update(pooled=o.detach().clone()))
    try:
        with torch.no_grad():
            base = proj(feats)  # (1, side^2, text hidden)
    finally:
        handle.remove()
    pooled = seen["pooled"][0]  # (hidden, side, side)
    k = adapter.pool
    for i in range(adapter.side):
        for j in range(adapter.side):
            assert pooled[0, i, j] == pytest.approx(k * i + (k - 1) / 2)  # mean patch row of block (i, j)
            assert pooled[1, i, j] == pytest.approx(k * j + (k - 1) / 2)
    i, j = 2, 5
    bumped = feats.clone()
    block = ((r // k == i) & (c // k == j)).flatten()
    bumped[0, block, 2:] += 3.0
    with torch.no_grad():
        changed = (proj(bumped) - base).abs().amax(-1)[0] > 1e-6  # (side^2,)
    assert torch.nonzero(changed).flatten().tolist() == [i * adapter.side + j]


def test_image_features_fill_the_soft_tokens(adapter: Gemma3Adapter) -> None:
    """The language model receives the projector's features of the view at the soft tokens, in order."""
    image = noise_image(3, (300, 110))
    embeds, ids = capture_inputs_embeds(adapter, image)
    pixels, _ = adapter._pixel_inputs([image])
    with torch.no_grad():
        feats = adapter.model.model.get_image_features(pixel_values=pixels["pixel_values"]).pooler_output
    assert feats.shape[:2] == (1, SIDE * SIDE)
    image_pos = torch.nonzero(ids == adapter.image_token_id).flatten()
    torch.testing.assert_close(embeds[image_pos], feats.reshape(-1, feats.shape[-1]))


# ---------------------------------------------------------------------------------------------- pan-and-scan


@pytest.mark.parametrize("wh", PAS_SIZES)
def test_pan_and_scan_views_follow_the_processor(pas_adapter: Gemma3Adapter, wh: tuple[int, int]) -> None:
    """With do_pan_and_scan: the stock processor's encoding (its num_crops, its prompt text) equals the adapter's;
    each crop view is the processor's own crop resized to the square; one 64-token block per view."""
    a = pas_adapter
    image = noise_image(4, wh)
    views = a.views(wh)
    enc, expanded = a._encode([image], [a.chat_text(PROMPT)])
    stock = _stock_encode(a, [image], PROMPT, do_pan_and_scan=True, **G3_PAN_AND_SCAN)
    assert torch.equal(enc["input_ids"], stock["input_ids"])
    assert torch.equal(enc["token_type_ids"], stock["token_type_ids"])
    torch.testing.assert_close(enc["pixel_values"], stock["pixel_values"])
    meta = a.image_processor(images=[image], return_tensors="pt", do_pan_and_scan=True, **G3_PAN_AND_SCAN)
    assert int(meta["num_crops"][0]) == len(views) - 1
    assert len(views) == {(1800, 600): 4, (600, 1800): 4, (1000, 600): 3, (2600, 500): 5}.get(wh, 1)
    assert ("Here is the original image" in expanded[0]) == (len(views) > 1)
    runs = _runs(enc["input_ids"][0], a.image_token_id)
    assert [n for _, n in runs] == [SIDE * SIDE] * len(views)
    ip = a.image_processor
    from transformers.image_utils import SizeDict

    arr = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    for k, v in enumerate(views):
        x0, y0, x1, y1 = (round(t) for t in v.grid.view_xyxy)
        assert v.token_start == k * SIDE * SIDE and (v.kind == "image") == (k == 0)
        want = ip.resize(arr[:, y0:y1, x0:x1], SizeDict(height=G3_IMAGE_PX, width=G3_IMAGE_PX), resample=ip.resample)
        np.testing.assert_allclose(enc["pixel_values"][k].numpy() * 0.5 + 0.5, want / 255.0, atol=1e-5)
    if len(views) > 2:  # the crops tile the image along its long side
        boxes = [v.grid.view_xyxy for v in views[1:]]
        long = 0 if wh[0] > wh[1] else 1
        assert boxes[0][long] == 0 and boxes[-1][long + 2] == wh[long]
        assert all(b[long + 2] == nb[long] for b, nb in itertools.pairwise(boxes))
    pre = a.prefill(image, PROMPT, TARGET)
    assert pre.visual_positions == list(range(runs[0][0], runs[0][0] + SIDE * SIDE))  # the original view only
    assert len(a.token_boxes(wh)) == a.num_image_tokens(wh) == SIDE * SIDE * len(views)


def test_a_marker_in_a_crop_lights_the_crop_token_whose_box_holds_it(pas_adapter: Gemma3Adapter) -> None:
    wh = (1800, 600)
    views = pas_adapter.views(wh)
    boxes = pas_adapter.token_boxes(wh)
    crop = views[2]
    cw, ch = crop.grid.cell_wh
    x0, y0, _, _ = crop.grid.view_xyxy
    centre = (x0 + 5.5 * cw, y0 + 2.5 * ch)
    bright = _view_brightness(pas_adapter, _marker_image(wh, centre, (0.3 * cw, 0.3 * ch)))
    for k in (0, 2):  # the original view and the crop both see it, each at its own token
        tr, tc = np.unravel_index(int(bright[k].argmax()), bright[k].shape)
        bx0, by0, bx1, by1 = boxes[views[k].token_start + int(tr) * SIDE + int(tc)]
        assert bx0 <= centre[0] < bx1 and by0 <= centre[1] < by1
    assert np.unravel_index(int(bright[2].argmax()), bright[2].shape) == (2, 5)


def test_pan_and_scan_settings_default_to_the_processors_when_null() -> None:
    model, ip, tok = tiny_gemma3(seed=0)
    ip.do_pan_and_scan = True  # the other settings stay None, as in the hub file
    a = Gemma3Adapter(model, ip, tok)
    assert a.pan_and_scan == {"do_pan_and_scan": True, **G3_PAN_AND_SCAN}
    assert len(a.views((1800, 600))) == 4


# ---------------------------------------------------------------------------------------------- attention and cache


def test_image_tokens_attend_bidirectionally_and_never_to_the_text_after(adapter: Gemma3Adapter) -> None:
    """A change to the LAST soft token's embedding alone (the projector's output, so the vision tower is out of the
    picture) reaches the FIRST soft token's layer-1 value with token_type_ids (the block attends both ways) and not
    without them (causal); a different question leaves every image token's values unchanged."""
    image = noise_image(5, (120, 80))
    enc, _ = adapter._encode([image], [adapter.chat_text(PROMPT)])
    image_pos = torch.nonzero(enc["input_ids"][0] == adapter.image_token_id).flatten()
    first, layer = int(image_pos[0]), adapter.model.model.language_model.layers[1]

    def first_value(inputs: dict, bump: bool) -> torch.Tensor:
        proj = adapter.model.model.multi_modal_projector

        def edit(_m: torch.nn.Module, _i: tuple, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[:, -1] += 2.0 if bump else 0.0  # the last soft token of the view
            return out

        handle = proj.register_forward_hook(edit)
        try:
            with torch.no_grad():
                hs = adapter.model(**inputs, output_hidden_states=True, use_cache=False).hidden_states[1]
                return layer.self_attn.v_proj(layer.input_layernorm(hs))[0, first]
        finally:
            handle.remove()

    mixed = [first_value(dict(enc), bump) for bump in (False, True)]
    assert (mixed[0] - mixed[1]).abs().max() > 1e-4  # bidirectional: the first token saw the last
    causal = {k: v for k, v in enc.items() if k != "token_type_ids"}
    torch.testing.assert_close(first_value(causal, False), first_value(causal, True))  # causal: it cannot
    pre = adapter.prefill(image, PROMPT, TARGET)
    other = adapter.prefill(image, "Is there a blue card in the image?", "blue card")
    last = pre.visual_positions[-1] + 2  # through <end_of_image> and the blank line after it
    for a_vals, b_vals in zip(pre.layer_values, other.layer_values, strict=True):
        torch.testing.assert_close(a_vals[:, :last], b_vals[:, :last], atol=1e-5, rtol=1e-5)


def test_the_cache_keeps_every_position_of_the_sliding_layers(pas_adapter: Gemma3Adapter) -> None:
    """A pan-and-scan prompt longer than the window: transformers' default cache keeps only window - 1 positions of
    the sliding layers; the adapter's prefill keeps all, with the default cache's logits, and equals the hooks."""
    a = pas_adapter
    image = noise_image(6, (1800, 600))
    enc, _ = a._encode([image], [a.chat_text(PROMPT)])
    n = enc["input_ids"].shape[1]
    assert n > G3_SLIDING_WINDOW
    types = a.model.config.text_config.layer_types
    assert types == ["sliding_attention"] * 5 + ["full_attention"]  # the real 5 : 1 pattern
    with torch.no_grad():
        default = a.model(**enc, use_cache=True, logits_to_keep=1)
    from focus_tool.adapters.hf import cache_values
    from focus_tool.adapters.prefix_cache import output_cache

    lengths = [cache_values(output_cache(default), i).shape[-2] for i in range(a.num_layers)]
    assert lengths == [G3_SLIDING_WINDOW - 1] * 5 + [n]  # what the base's length check would refuse
    pre = a.prefill(image, PROMPT, TARGET)
    assert all(v.shape[-2] == n for v in pre.layer_values)
    yes, no = a.yes_no_ids()
    logits = default.logits[0, -1].float()
    assert pre.yes_no_margin == pytest.approx(float(logits[yes] - logits[no]), abs=1e-5)
    hooked, ids = hook_values(a, image)
    assert torch.equal(ids, pre.input_ids)
    for cached, ref in zip(pre.layer_values, hooked, strict=True):
        torch.testing.assert_close(cached, ref, atol=1e-5, rtol=1e-5)


def test_cache_values_equal_value_projection(adapter: Gemma3Adapter) -> None:
    image = noise_image(7, (150, 90))
    pre = adapter.prefill(image, PROMPT, TARGET)
    hooked, ids = hook_values(adapter, image)
    assert torch.equal(ids, pre.input_ids)
    assert len(pre.layer_values) == adapter.num_layers == 6
    for cached, ref in zip(pre.layer_values, hooked, strict=True):
        assert cached.shape == ref.shape == (adapter.num_kv_heads, len(ids), 16)
        torch.testing.assert_close(cached, ref, atol=1e-5, rtol=1e-5)
    assert adapter.num_kv_heads == 2 < adapter.model.config.text_config.num_attention_heads  # GQA, used as stored
    assert [adapter.tokenizer.convert_ids_to_tokens(int(ids[t])) for t in pre.target_positions] == ["▁red", "▁card"]


def test_map_from_cache_equals_independent_fig7(adapter: Gemma3Adapter) -> None:
    ours, pre = map_equal_to_fig7(adapter, noise_image(8, (100, 240)))
    assert ours.shape == (pre.grid.rows * pre.grid.cols,)


def test_sdpa_and_eager_give_the_same_map() -> None:
    check_sdpa_equals_eager(lambda attn: Gemma3Adapter(*tiny_gemma3(seed=3, attn=attn)), noise_image(9, (140, 60)))


def test_batched_yes_no_equals_one_at_a_time(adapter: Gemma3Adapter) -> None:
    check_batched_yes_no(adapter)  # crops of 4 sizes and aspects, left padded, one pixel_values


@pytest.mark.parametrize("pan_and_scan", [False, True], ids=["one-view", "pan-and-scan-past-the-window"])
def test_image_prefix_cache_gives_the_full_prefill(pan_and_scan: bool) -> None:
    """Also on a pan-and-scan prompt longer than the sliding window (4 views, 308 tokens > 128)."""
    adapter = Gemma3Adapter(*tiny_gemma3(seed=2, pan_and_scan=pan_and_scan))
    image = noise_image(10, (1800, 600) if pan_and_scan else (200, 120))
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


# ---------------------------------------------------------------------------------------------- tokenizer and loading


def test_the_tokenizer_behaves_like_gemmas(adapter: Gemma3Adapter) -> None:
    """SentencePiece-style: spaces become '▁' on the following piece, no dummy prefix, byte fallback for unseen
    characters, <bos> prepended once, lossless decode; Gemma's special tokens are single tokens."""
    tok = adapter.tokenizer
    text = "Is there a red card? Ünï 🂡"
    ids = tok(text)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[:6] == ["<bos>", "Is", "▁there", "▁a", "▁red", "▁card?"]
    assert "<0xC3>" in pieces and "<0xF0>" in pieces  # byte fallback, no <unk>
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    for s in ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"):
        assert len(tok(s, add_special_tokens=False)["input_ids"]) == 1
    assert (tok.boi_token, tok.eoi_token, tok.image_token) == (
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    )


def test_loads_from_the_hub_layout(saved: Path) -> None:
    files = {p.name for p in saved.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert {"preprocessor_config.json", "processor_config.json", "chat_template.json"} <= files
    pre = json.loads((saved / "preprocessor_config.json").read_text())
    assert (pre["image_processor_type"], pre["processor_class"]) == ("Gemma3ImageProcessor", "Gemma3Processor")
    assert pre["do_pan_and_scan"] is None  # as on the hub: pan-and-scan off
    assert json.loads((saved / "config.json").read_text())["model_type"] == "gemma3"
    adapter = load_adapter(saved)
    assert isinstance(adapter, Gemma3Adapter)
    assert type(adapter.image_processor).__name__ == "Gemma3ImageProcessorPil"  # no torchvision: the PIL backend
    assert type(adapter.tokenizer).__name__ == "GemmaTokenizer"
    assert adapter.tokenizer.boi_token == "<start_of_image>"  # the named extra tokens survive the round trip
    assert adapter.chat_template == GEMMA3_CHAT_TEMPLATE and adapter.pan_and_scan is None
    assert adapter.chat_text("hi") == (
        "<start_of_turn>user\n<start_of_image>hi<end_of_turn>\n<start_of_turn>model\n"
    )  # the template's <bos> is the tokenizer's to add
    check_loaded_like_fresh(adapter, Gemma3Adapter(*tiny_gemma3(seed=0)), noise_image(11, (90, 60)))


def test_a_processor_at_another_size_is_refused() -> None:
    model, ip, tok = tiny_gemma3(seed=0)
    ip.size = {"height": 2 * G3_IMAGE_PX, "width": 2 * G3_IMAGE_PX}
    with pytest.raises(ModelLoadError, match="resizes to 448 x 448 px but the vision tower takes 224 px"):
        Gemma3Adapter(model, ip, tok)


def test_zoom_cli_end_to_end(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`focus zoom IMG -t ... --model TINYDIR --json`: boxes inside the image, search passes counted."""
    wh = (300, 100)  # 3:1
    path = tmp_path / "wide.png"
    noise_image(12, wh).save(path)
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
    assert cfg.relevance.layers is None  # [O//2, O): 3..5 of the tiny model's 6
    assert (cfg.relevance.smooth_sigma, cfg.relevance.downsample, cfg.proposal.s_max) == (0.0, 1, 7)
    result = zoom_with_boxes_inside(adapter, cfg, noise_image(13, (100, 300)))
    assert result.relevance_maps[0].rows == SIDE


# ---------------------------------------------------------------------------------------------- multi-image answer


def test_interleaved_prompt_keeps_the_order(adapter: Gemma3Adapter) -> None:
    images, prompt = adapter._interleaved_prompt(interleaved_parts())
    img = "<start_of_image>"
    assert len(images) == 3
    assert prompt == (
        "<start_of_turn>user\n" + img + CAPTIONS[0] + img + CAPTIONS[1] + img + CAPTIONS[2] + "\n" + PROMPT
        + "<end_of_turn>\n<start_of_turn>model\n"
    )  # fmt: skip
    no_template = Gemma3Adapter(adapter.model, adapter.image_processor, adapter.tokenizer)
    no_template.chat_template = None
    assert no_template._interleaved_prompt(interleaved_parts())[1] == prompt
    assert no_template.chat_text("hi") == adapter.chat_text("hi")


def test_interleaved_encoding_equals_the_stock_processor(adapter: Gemma3Adapter) -> None:
    parts = interleaved_parts()
    images, prompt = adapter._interleaved_prompt(parts)
    enc = adapter._encode_interleaved(images, prompt)
    content: list[dict] = []
    for p in parts:
        content.append({"type": "image", "image": p} if isinstance(p, Image.Image) else {"type": "text", "text": p})
    merged = [*content[:5], {"type": "text", "text": CAPTIONS[2] + "\n" + PROMPT}]
    stock = _stock_processor(adapter).apply_chat_template(
        [{"role": "user", "content": merged}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    assert torch.equal(enc["input_ids"], stock["input_ids"])
    assert [n for _, n in _runs(enc["input_ids"][0], adapter.image_token_id)] == [SIDE * SIDE] * 3
    adapter.counter.reset()
    with adapter.counter.in_phase("answer"):
        reply = adapter.generate_interleaved(parts, max_new_tokens=3)
    assert isinstance(reply, str) and adapter.counter.counts == {"search": 0, "answer": 1, "extraction": 0}


def test_option_log_likelihoods_equal_manual_scores(adapter: Gemma3Adapter) -> None:
    check_option_log_likelihoods(adapter)


def test_yes_no_margins_interleaved_equal_manual_margins(adapter: Gemma3Adapter) -> None:
    check_yes_no_margins_interleaved(adapter)
    image = noise_image(23, (40, 90))
    torch.testing.assert_close(
        adapter.yes_no_margins_interleaved([[image, PROMPT]]), adapter.yes_no_margins([image], [PROMPT])
    )


def test_real_size_gives_256_soft_tokens() -> None:
    """At the checkpoints' 896 px: 64 x 64 patches pooled 4 x 4 -> 16 x 16 = 256 soft tokens, the stock processor
    agrees, and a marker lights the token whose box holds it."""
    adapter = Gemma3Adapter(*tiny_gemma3(seed=0, image_px=896, side=16))
    assert (adapter.side, adapter.pool, adapter.model.config.mm_tokens_per_image) == (16, 4, 256)
    wh = (2246, 1582)
    image = noise_image(14, wh)
    enc, _ = adapter._encode([image], [adapter.chat_text(PROMPT)])
    assert torch.equal(enc["input_ids"], _stock_encode(adapter, [image], PROMPT)["input_ids"])
    assert int((enc["input_ids"] == adapter.image_token_id).sum()) == 256
    grid = adapter.grid_for(wh)
    assert (grid.rows, grid.cols) == (16, 16) and grid.cell_wh == pytest.approx((2246 / 16, 1582 / 16))
    cw, ch = grid.cell_wh
    r, c = 13, 5
    centre = ((c + 0.5) * cw, (r + 0.5) * ch)
    bright = _view_brightness(adapter, _marker_image(wh, centre, (0.3 * cw, 0.3 * ch)))[0]
    tr, tc = np.unravel_index(int(bright.argmax()), bright.shape)
    assert (int(tr), int(tc)) == (r, c)
    x0, y0, x1, y1 = adapter.token_boxes(wh)[int(tr) * 16 + int(tc)]
    assert x0 <= centre[0] < x1 and y0 <= centre[1] < y1
