"""ZoomEye's search on a scripted fake adapter, against traces worked out by hand from upstream
``ZoomEye/tree.py`` and ``ZoomEye/zoom_eye.py::zoom_eye_search_type1`` (om-ai-lab/ZoomEye).

Setup (hand-derived): a 36 x 36 image, patch_size 10, 2x2 split. Tree: root "0" (36 px) -> "0.k" (18 px, depth 1)
-> "0.k.j" (9 px < 10: leaves, depth 2). D = min(2, 5) = 2, pop_limit = 3 * D = 6, tau = 0.6, b = 0.2:
w(1) = 0.2 + 0.8 * (1/2)^2 = 0.4, w(2) = 1.0 (latent ignored at the leaves).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from focus_tool.adapters.base import ForwardCounter, MLLMAdapter, Prefill
from focus_tool.baselines.common import answer_text
from focus_tool.baselines.zoomeye import (
    ANSWERING,
    CUE_PROMPT,
    DECOMPOSED,
    EXISTENCE,
    LATENT,
    ZOOMEYE_PRESETS,
    ZoomEyeConfig,
    ZoomEyeMethod,
    ZoomEyePrompts,
    merge_boxes,
    parse_cues,
    priority_weight,
    register_zoomeye_preset,
    root_view,
    split_grid,
    tree_depth,
    zoom_views,
    zoomeye_config_for,
)
from focus_tool.config import FocusConfig, TargetConfig
from focus_tool.errors import ConfigError
from focus_tool.grid import PatchGrid
from focus_tool.presets import register_preset, unregister_preset
from focus_tool.steps.targets import extraction_prompt

BOXES = {"0": (0, 0, 36, 36)}
for k, (x, y) in enumerate([(0, 0), (18, 0), (0, 18), (18, 18)]):
    BOXES[f"0.{k}"] = (x, y, x + 18, y + 18)
    for j, (dx, dy) in enumerate([(0, 0), (9, 0), (0, 9), (9, 9)]):
        BOXES[f"0.{k}.{j}"] = (x + dx, y + dy, x + dx + 9, y + dy + 9)


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


class ScriptedAdapter(MLLMAdapter):
    """Fixed confidences per (node, prompt kind); the node is decoded from the crop's pixels (R = 7x, G = 7y)."""

    model_id = "scripted"
    num_layers = 2
    input_px = 10

    def __init__(self, table: dict[str, tuple[float, float, float]]) -> None:
        self.table = table  # node -> (existence, latent, answering) confidences in [-1, 1]
        self.counter = ForwardCounter()
        self.calls: list[tuple[str, str]] = []

    @property
    def encoder_px(self) -> int | None:
        return self.input_px

    def node_of(self, crop: Image.Image) -> str:
        r, g, _ = crop.getpixel((0, 0))
        box = (r // 7, g // 7, r // 7 + crop.width, g // 7 + crop.height)
        return max(BOXES, key=lambda n: _iou(BOXES[n], box))

    def yes_no_margins(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        out = []
        for im, text in zip(images, texts, strict=True):
            kind = "exist" if text.startswith("Is there") else "latent" if text.startswith("According") else "answer"
            node = self.node_of(im)
            self.calls.append((kind, node))
            c = self.table.get(node, (0.0, 0.0, 0.0))[("exist", "latent", "answer").index(kind)]
            out.append(2 * math.atanh(c))  # so that tanh(margin / 2) == c
        self.counter.add(len(images), 10 * len(images))
        return torch.tensor(out, dtype=torch.float64)

    def generate(self, image: Image.Image | None, text: str, *, max_new_tokens: int) -> str:
        self.counter.add(1, 10)
        return "So I need the information about the following objects: red card." if image is None else "A"

    def prefill(self, image: Image.Image, text: str, target: str, *, keys_norope: bool = False) -> Prefill:
        raise NotImplementedError

    def grid_for(self, image_wh: tuple[int, int]) -> PatchGrid:
        return PatchGrid.stretched(image_wh, 2, 2, (10, 10))

    @property
    def attn_implementation(self) -> str:
        return "sdpa"


def _image() -> Image.Image:
    xs, ys = np.meshgrid(np.arange(36), np.arange(36))
    return Image.fromarray(np.stack([xs * 7, ys * 7, np.zeros_like(xs)], -1).astype(np.uint8))


# existence, latent, answering; priorities at depth 1 = 0.4 e + 0.6 l, at depth 2 = e
TABLE = {
    "0": (0.0, 0.0, 0.1),
    "0.0": (0.2, 0.5, 0.3),  # 0.08 + 0.30 = 0.38
    "0.1": (0.6, 0.1, 0.35),  # 0.24 + 0.06 = 0.30
    "0.2": (-0.5, 0.9, 0.2),  # -0.20 + 0.54 = 0.34
    "0.3": (0.0, 0.0, 0.0),  # 0.00
    "0.0.0": (0.1, 0.9, 0.0),
    "0.0.1": (0.45, 0.9, 0.45),
    "0.0.2": (-0.3, 0.9, 0.0),
    "0.0.3": (0.2, 0.9, 0.0),
    "0.2.0": (0.05, 0.0, 0.0),
    "0.2.1": (-0.1, 0.0, 0.0),
    "0.2.2": (0.5, 0.0, 0.42),
    "0.2.3": (0.33, 0.0, 0.15),
    "0.1.0": (-0.2, 0.0, 0.0),
    "0.1.1": (-0.2, 0.0, 0.0),
    "0.1.2": (-0.2, 0.0, 0.0),
    "0.1.3": (0.25, 0.0, 0.48),
}


def _method(table: dict[str, tuple[float, float, float]]) -> tuple[ZoomEyeMethod, ScriptedAdapter]:
    adapter = ScriptedAdapter(table)
    return ZoomEyeMethod(adapter, ZoomEyeConfig(patch_size=10)), adapter


def test_tree_geometry_by_hand() -> None:
    assert tree_depth(36, 36, 10, 4) == 2
    assert split_grid(36, 36, 4) == (2, 2)
    assert split_grid(10, 30, 4) == (4, 1) and split_grid(30, 10, 4) == (1, 4)
    assert priority_weight(1, 2, 0.2) == pytest.approx(0.4) and priority_weight(2, 2, 0.2) == pytest.approx(1.0)
    method, _ = _method({})
    root = method.root((36, 36))
    assert [c.bbox for c in root.children] == [(0, 0, 18, 18), (18, 0, 18, 18), (0, 18, 18, 18), (18, 18, 18, 18)]
    assert root.children[1].children[3].bbox == (27, 9, 9, 9) and root.children[1].children[3].is_leaf
    # leaves are expanded about their centre to patch_size: (27..36, 9..18) centre (31.5, 13.5) -> (26, 8, 36, 19)
    assert method.crop_box(root.children[1].children[3], (36, 36)) == (26, 8, 36, 19)


def test_relaxation_trace() -> None:
    """Hand trace: budget 6 runs out at 0.2.3 (tau 0.6 -> 0.5, nothing >= 0.5, continue), then at 0.1.3
    (pop 8 = new limit 8: tau 0.5 -> 0.4; best popped >= 0.4 is 0.1.3 with 0.48 > 0.45 > 0.42)."""
    method, adapter = _method(TABLE)
    out = method.search_type1(_image(), "red card", "What is the color of the dots on the red card?")
    steps = [(s.node, s.answering, s.tau, s.event, s.new_tau) for s in out.trace]
    expected = [
        ("0", 0.1, 0.6, "pop", None),
        ("0.0", 0.3, 0.6, "pop", None),  # queue was 0.0 (.38), 0.2 (.34), 0.1 (.30), 0.3 (0)
        ("0.0.1", 0.45, 0.6, "pop", None),  # 0.0.1 (.45) beats 0.2 (.34); leaf
        ("0.2", 0.2, 0.6, "pop", None),
        ("0.2.2", 0.42, 0.6, "pop", None),  # 0.2.2 (.5), 0.2.3 (.33), 0.1 (.30), ...
        ("0.2.3", 0.15, 0.6, "relax_continue", 0.5),  # 6th pop
        ("0.1", 0.35, 0.5, "pop", None),  # 0.35 < 0.5
        ("0.1.3", 0.48, 0.5, "relax_accept", 0.4),  # 8th pop; 0.1.3 (.25) beat 0.0.3 (.2)
    ]
    assert [s[0] for s in steps] == [e[0] for e in expected]
    for got, want in zip(steps, expected, strict=True):
        assert got[0] == want[0] and got[3] == want[3]
        assert got[1] == pytest.approx(want[1]) and got[2] == pytest.approx(want[2])
        assert (got[4] is None) == (want[4] is None) and (want[4] is None or got[4] == pytest.approx(want[4]))
    assert out.node is not None and out.node.name == "0.1.3" and out.pops == 8 and out.max_depth == 2
    # 8 answering passes + 2 per queued node (4 children of root, 0.0, 0.2 and 0.1): 8 + 32
    assert adapter.counter.counts["search"] == 40
    answered = [n for kind, n in adapter.calls if kind == "answer"]
    assert answered == [e[0] for e in expected]
    assert sum(kind == "exist" for kind, _ in adapter.calls) == 16 == sum(kind == "latent" for kind, _ in adapter.calls)


def test_stop_at_threshold() -> None:
    """0.0 answers 0.7 >= 0.6 at the second pop: stop. Calls: root answer, 4 x (exist, latent), 0.0 answer."""
    table = dict(TABLE)
    table["0.0"] = (0.2, 0.5, 0.7)
    method, adapter = _method(table)
    out = method.search_type1(_image(), "red card", "Q?")
    assert [(s.node, s.event) for s in out.trace] == [("0", "pop"), ("0.0", "stop")]
    assert out.node is not None and out.node.name == "0.0"
    kinds = [k for k, _ in adapter.calls]
    assert kinds == ["answer"] + ["exist"] * 4 + ["latent"] * 4 + ["answer"]
    assert adapter.counter.counts["search"] == 10


def test_several_cues_visit_bottom_and_skip_root() -> None:
    """force_no_root: the root is not asked; 0.0 (0.7) is held until a bottom node (0.0.1) is visited."""
    table = dict(TABLE)
    table["0.0"] = (0.2, 0.5, 0.7)
    method, adapter = _method(table)
    out = method.search_type1(_image(), "red card", "Q?", force_visit_bottom=True, force_no_root=True)
    assert [(s.node, s.answering is None, s.event) for s in out.trace] == [
        ("0", True, "pop"),
        ("0.0", False, "pop"),
        ("0.0.1", False, "bottom_stop"),
    ]
    assert out.node is not None and out.node.name == "0.0"
    assert adapter.counter.counts["search"] == 2 + 8 + 8


def test_give_up_below_lower_threshold() -> None:
    """All answering confidences negative: relaxations 0.6 -> 0.5 (pop 6) -> 0.4 (pop 8) -> 0.2 (pop 10) ->
    0.0 (pop 12) -> -0.2 < 0 (pop 14): give up, no node."""
    table = dict.fromkeys(BOXES, (0.0, 0.0, -0.5))
    method, _ = _method(table)
    out = method.search_type1(_image(), "red card", "Q?")
    relax = [(s.event, round(s.new_tau or 0, 6)) for s in out.trace if s.event != "pop"]
    assert relax == [
        ("relax_continue", 0.5),
        ("relax_continue", 0.4),
        ("relax_continue", 0.2),
        ("relax_continue", 0.0),
        ("give_up", -0.2),
    ]
    assert out.node is None and out.pops == 14


def test_run_answers_on_found_crop_and_counts() -> None:
    method, _ = _method(TABLE)
    result = method.run(_image(), question="What is the color?", options=["white", "black"])
    assert result.method == "zoomeye" and result.targets == ["red card"]
    assert result.answer_boxes == [method.crop_box(method.root((36, 36)).children[1].children[3], (36, 36))]
    fp = result.forward_passes
    assert (fp.extraction, fp.search, fp.answer) == (1, 40, 1)


def test_type2_keeps_nodes_beating_their_subtree() -> None:
    """Post-order to depth 2; keep when existence >= max(best below, 0.6): leaves 0.1.3 (0.9) and 0.2.1 (0.7),
    and 0.2 (0.8 beats the 0.7 below it); 0.3.0 (0.5) is under 0.6. 1 + 4 + 16 passes."""
    table = dict.fromkeys(BOXES, (0.0, 0.0, 0.0))
    table["0.1.3"] = (0.9, 0, 0)
    table["0.2"] = (0.8, 0, 0)
    table["0.2.1"] = (0.7, 0, 0)
    table["0.3.0"] = (0.5, 0, 0)
    method, adapter = _method(table)
    kept = method.search_type2(_image(), "car")
    assert sorted(n.name for n in kept) == ["0.1.3", "0.2", "0.2.1"]
    assert adapter.counter.counts["search"] == 21


@pytest.mark.parametrize(
    ("reply", "cues"),
    [
        ("So I need the information about the following objects: red card and blue card.", ["red card", "blue card"]),
        ("following objects: the dog, it and all cars.", ["the dog", "all cars"]),
        ("", []),
    ],
)
def test_parse_cues(reply: str, cues: list[str]) -> None:
    assert parse_cues(reply, 4) == cues


# ---------------------------------------------------------------------------------------------- Global+Local input
#
# The same tree scaled by 4: a 144 x 144 image, patch_size 40 -> root "0" (144 px), "0.k" (72 px), "0.k.j" (36 px <
# 40: leaves). Same TABLE, same b = 0.2, so the same pops as test_relaxation_trace; what changes is what each call
# sees (upstream ZoomModelGlobalLocal): the root alone ("full", global prompts), every other node as main image +
# zoomed view ("zoom", zoomed-in-view prompts). The padded square is the image itself; outline t = 144 // 120 = 1 px.

BIG_BOXES = {name: tuple(4 * v for v in box) for name, box in BOXES.items()}


def _big_image() -> Image.Image:
    xs, ys = np.meshgrid(np.arange(144), np.arange(144))  # pixel (x, y) = (R, G)
    return Image.fromarray(np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8))


class GlobalLocalAdapter(ScriptedAdapter):
    """Scripted multi-image adapter: records (kind, view, node) per confidence in ``seen``; the zoomed view's node is
    decoded from its centre pixel (which encodes its image position) and its size."""

    answer_mode = "multi"
    input_px = 40

    def __init__(
        self,
        table: dict[str, tuple[float, float, float]],
        *,
        by_text: dict[str, float] | None = None,
        cue_reply: str = "So I need the information about the following objects: red card.",
    ) -> None:
        super().__init__(table)
        self.by_text = by_text or {}
        self.cue_reply = cue_reply
        self.seen: list[tuple[str, str, str]] = []  # (kind, view, node) per confidence call
        self.views: list[tuple[tuple[int, int], str, str, str]] = []  # (main size, main caption, zoom caption, text)
        self.answers: list[list[Image.Image | str]] = []

    def big_node(self, view: Image.Image) -> str:
        cx, cy, _ = view.getpixel((view.width // 2, view.height // 2))
        x0, y0 = cx - view.width // 2, cy - view.height // 2
        return max(BIG_BOXES, key=lambda n: _iou(BIG_BOXES[n], (x0, y0, x0 + view.width, y0 + view.height)))

    def _margin(self, text: str, view: str, node: str) -> float:
        kind = "exist" if text.startswith("Is there") else "latent" if text.startswith("According") else "answer"
        self.seen.append((kind, view, node))
        c = self.by_text.get(text, self.table.get(node, (0.0, 0.0, 0.0))[("exist", "latent", "answer").index(kind)])
        return 2 * math.atanh(c)

    def yes_no_margins(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        views = ["full" if im.size == (144, 144) else "small" for im in images]
        out = [self._margin(t, v, "0") for t, v in zip(texts, views, strict=True)]
        self.counter.add(len(images), 10 * len(images))
        return torch.tensor(out, dtype=torch.float64)

    def yes_no_margins_interleaved(self, prompts: Sequence[Sequence[Image.Image | str]]) -> torch.Tensor:
        out = []
        for main, main_caption, zoom, zoom_caption, text in prompts:
            assert isinstance(main, Image.Image) and isinstance(zoom, Image.Image)
            assert isinstance(main_caption, str) and isinstance(zoom_caption, str) and isinstance(text, str)
            self.views.append((main.size, main_caption, zoom_caption, text))
            out.append(self._margin(text, "zoom", self.big_node(zoom)))
        self.counter.add(len(prompts), 20 * len(prompts))
        return torch.tensor(out, dtype=torch.float64)

    def generate(self, image: Image.Image | None, text: str, *, max_new_tokens: int) -> str:
        self.counter.add(1, 10)
        if image is None:
            return self.cue_reply
        self.answers.append([image, text])
        return "A"

    def generate_interleaved(self, parts: Sequence[Image.Image | str], *, max_new_tokens: int) -> str:
        self.counter.add(1, 20)
        self.answers.append(list(parts))
        return "B"

    def option_log_likelihoods_interleaved(
        self, parts: Sequence[Image.Image | str], options: Sequence[str]
    ) -> torch.Tensor:
        self.counter.add(len(options), 20 * len(options))
        self.answers.append(list(parts))
        return torch.arange(len(options), dtype=torch.float64)  # the last option wins


def _expanded(parent: str) -> list[tuple[str, str, str]]:
    """The 8 priority calls when ``parent``'s 4 children enter the queue: existence of each, then latent of each."""
    return [(kind, "zoom", f"{parent}.{i}") for kind in ("exist", "latent") for i in range(4)]


def test_input_mode_follows_the_adapter_answer_mode() -> None:
    assert ZoomEyeMethod(ScriptedAdapter({}), ZoomEyeConfig()).input_mode == "local"
    assert ZoomEyeMethod(GlobalLocalAdapter({}), ZoomEyeConfig()).input_mode == "global_local"
    assert ZoomEyeMethod(GlobalLocalAdapter({}), ZoomEyeConfig(input_mode="local")).input_mode == "local"


def test_global_local_relaxation_trace_calls() -> None:
    """Same pops as test_relaxation_trace; the root's answering call sees the full image alone, every other call the
    main image (40 x 40, outlined) + the node's zoomed view with the zoomed-in-view prompts."""
    adapter = GlobalLocalAdapter(TABLE)
    method = ZoomEyeMethod(adapter, ZoomEyeConfig())
    out = method.search_type1(_big_image(), "red card", "What is the color of the dots on the red card?")
    assert [(s.node, s.event) for s in out.trace] == [
        ("0", "pop"),
        ("0.0", "pop"),
        ("0.0.1", "pop"),
        ("0.2", "pop"),
        ("0.2.2", "pop"),
        ("0.2.3", "relax_continue"),
        ("0.1", "pop"),
        ("0.1.3", "relax_accept"),
    ]
    assert out.node is not None and out.node.name == "0.1.3"
    assert adapter.seen == [
        ("answer", "full", "0"),
        *_expanded("0"),
        ("answer", "zoom", "0.0"),
        *_expanded("0.0"),
        ("answer", "zoom", "0.0.1"),
        ("answer", "zoom", "0.2"),
        *_expanded("0.2"),
        ("answer", "zoom", "0.2.2"),
        ("answer", "zoom", "0.2.3"),
        ("answer", "zoom", "0.1"),
        *_expanded("0.1"),
        ("answer", "zoom", "0.1.3"),
    ]
    assert adapter.counter.counts["search"] == 40  # 1 FP per confidence, as in Local mode
    main_caption = "This is the main image, and the section enclosed by the red rectangle is the focus region."
    zoom_caption = "This is the zoomed-in view of the focus region."
    existence = "Is there a red card in the zoomed-in view? Answer Yes or No."
    assert adapter.views[0] == ((40, 40), main_caption, zoom_caption, existence)
    assert adapter.views[4][3] == (
        "According to your common sense knowledge and the content of the zoomed-in view, along with its location in "
        "the image, is it possible to find a red card by further zooming in the current view? Answer Yes or No and "
        "tell the reason."
    )
    assert adapter.views[8][3] == (
        "Question: What is the color of the dots on the red card?\n"
        "Could you answer the question based on the the available visual information? Answer Yes or No."
    )


@pytest.mark.parametrize("scheme", ["letter", "logit"])
def test_global_local_final_answer_gets_main_image_and_zoomed_view(scheme: str) -> None:
    """0.1.3 = (108, 36, 144, 72) -> expanded to 40 px about (126, 54): (106, 34, 144, 74); outlined 1 px outside:
    (105, 33, 144, 75), the zoomed view. Letter: one interleaved generate; logit: one pass per option."""
    adapter = GlobalLocalAdapter(TABLE)
    method = ZoomEyeMethod(adapter, ZoomEyeConfig())
    question = "What is the color of the red rectangle?"  # mentions a red rectangle: outlined in blue
    result = method.run(_big_image(), question=question, options=["white", "black"], scheme=scheme)  # type: ignore[arg-type]
    assert result.answer_view == "multi" and result.answer_boxes == [(106, 34, 144, 74)]
    assert result.answer == ("B" if scheme == "letter" else "black")
    fp = result.forward_passes
    assert (fp.extraction, fp.search, fp.answer) == (1, 40, 1 if scheme == "letter" else 2)
    main, main_caption, zoom, zoom_caption, text = adapter.answers[-1]
    assert isinstance(main, Image.Image) and isinstance(zoom, Image.Image)
    assert main.size == (40, 40) and zoom.size == (39, 42) and adapter.big_node(zoom) == "0.1.3"
    assert main_caption == "This is the main image, and the section enclosed by the blue rectangle is the focus region."
    assert zoom_caption == "This is the zoomed-in view of the focus region."
    assert zoom.getpixel((0, 21)) == (0, 0, 255) and zoom.getpixel((1, 21)) == (106, 54, 0)  # outline, then image
    assert text == (question if scheme == "logit" else answer_text(question, ["white", "black"], ""))


def test_global_local_root_filter_skips_the_search() -> None:
    """Two cues: the root filter asks each decomposed question on the 40 x 40 root view; "blue card" reaches 0.7 >=
    tau_upper, so nothing is searched and the full image alone is answered (2 search FPs)."""
    decomposed_blue = ANSWERING.format(question=DECOMPOSED.format(target="blue card"))
    adapter = GlobalLocalAdapter(
        TABLE,
        by_text={decomposed_blue: 0.7},
        cue_reply="So I need the information about the following objects: red card and blue card.",
    )
    result = ZoomEyeMethod(adapter, ZoomEyeConfig()).run(_big_image(), question="Q?", options=["a", "b"])
    assert adapter.seen == [("answer", "small", "0"), ("answer", "small", "0")]
    assert result.targets == ["red card", "blue card"] and result.regions == []
    assert result.answer_view == "full" and result.answer_boxes == [] and result.answer == "A"
    assert adapter.answers[-1][0].size == (144, 144)  # the full image, single-image prompt
    fp = result.forward_passes
    assert (fp.extraction, fp.search, fp.answer) == (1, 2, 1)


def test_global_local_several_cues_search_from_the_root() -> None:
    """Root filter below tau (0.1 each), then one search per cue with force_visit_bottom and the root asked (no
    force_no_root in Global+Local); both find 0.1.3, whose equal patches merge into one outline."""
    adapter = GlobalLocalAdapter(
        TABLE, cue_reply="So I need the information about the following objects: red card and blue card."
    )
    result = ZoomEyeMethod(adapter, ZoomEyeConfig()).run(_big_image(), question="Q?", options=["a", "b"])
    assert adapter.seen[:3] == [("answer", "small", "0"), ("answer", "small", "0"), ("answer", "full", "0")]
    assert [r.target for r in result.regions] == ["red card", "blue card"]
    assert {r.box for r in result.regions} == {BIG_BOXES["0.1.3"]}
    assert result.answer_view == "multi" and result.answer_boxes == [(106, 34, 144, 74)]
    assert result.forward_passes.search == 2 + 2 * 40


@pytest.mark.parametrize(
    ("boxes", "merged"),
    [
        ([(0, 0, 10, 10), (100, 0, 110, 10)], [(0, 0, 110, 10)]),  # gap 90 < 2 x 50
        ([(0, 0, 10, 10), (110, 0, 120, 10)], [(0, 0, 10, 10), (110, 0, 120, 10)]),  # gap 100: not merged
        ([(0, 0, 10, 10), (180, 0, 190, 10), (90, 0, 100, 10)], [(0, 0, 190, 10)]),  # second pass joins the chain
        ([(5, 5, 20, 20), (5, 5, 20, 20)], [(5, 5, 20, 20)]),
        ([], []),
    ],
)
def test_merge_boxes(boxes: list[tuple[int, int, int, int]], merged: list[tuple[int, int, int, int]]) -> None:
    assert merge_boxes(boxes, 50) == merged


@pytest.mark.parametrize(
    ("main_view", "main_size"),
    [("square", (40, 40)), ("aspect", (40, 20))],
)
def test_zoom_views_geometry(main_view: str, main_size: tuple[int, int]) -> None:
    """240 x 120 image -> 240-px square, image at top = 60, t = 240 // 120 = 2. Patch (100, 20, 140, 60) -> square
    (100, 80, 140, 120) -> outlined box (98, 78, 142, 122), a 44 x 44 zoomed view with a 2-px border."""
    image = Image.new("RGB", (240, 120), (255, 255, 255))
    views = zoom_views(
        image,
        [(100, 20, 140, 60)],
        main_px=40,
        main_view=main_view,  # type: ignore[arg-type]
        colour="red",
        fill=(0, 0, 0),
        merge_buffer_px=50,
    )
    assert views.zoom_xyxy == (98, 78, 142, 122) and views.zoom.size == (44, 44)
    assert views.boxes_xyxy == [(100, 20, 140, 60)]
    assert [views.zoom.getpixel((x, 22)) for x in (0, 1, 2)] == [(255, 0, 0), (255, 0, 0), (255, 255, 255)]
    assert views.main.size == main_size
    assert root_view(image, main_px=40, main_view=main_view, fill=(0, 0, 0)).size == main_size  # type: ignore[arg-type]
    two = zoom_views(
        image,
        [(0, 0, 10, 10), (200, 100, 210, 110)],
        main_px=40,
        main_view="square",
        colour="blue",
        fill=(0, 0, 0),
        merge_buffer_px=50,
    )
    assert two.boxes_xyxy == [(0, 0, 10, 10), (200, 100, 210, 110)]  # far apart: two outlines
    assert two.zoom_xyxy == (0, 58, 212, 172)  # union of (0, 58, 12, 72) and (198, 158, 212, 172)


@pytest.fixture(scope="module")
def tiny_multi() -> dict[str, MLLMAdapter]:
    from focus_tool.adapters.llava_onevision import LlavaOnevisionAdapter
    from focus_tool.adapters.qwen2_5_vl import Qwen25VLAdapter
    from tests.tiny_models import tiny_onevision, tiny_qwen25vl

    return {
        "llava-onevision": LlavaOnevisionAdapter(*tiny_onevision(seed=0)),
        "qwen2.5-vl": Qwen25VLAdapter(*tiny_qwen25vl(seed=0)),
    }


@pytest.mark.parametrize("arch", ["llava-onevision", "qwen2.5-vl"])
@pytest.mark.parametrize("scheme", ["letter", "logit"])
def test_global_local_runs_on_tiny_multi_image_models(
    tiny_multi: dict[str, MLLMAdapter], arch: str, scheme: str
) -> None:
    """The real adapters' interleaved Yes/No and answer calls: preset per backbone, every pass counted."""
    adapter = tiny_multi[arch]
    cfg = zoomeye_config_for(adapter, depth_limit=2)
    assert cfg.input_mode == "global_local" and cfg.bias == 0.6 and cfg.patch_scale == 1.2
    assert cfg.main_view == ("aspect" if arch == "qwen2.5-vl" else "square")
    method = ZoomEyeMethod(adapter, dataclasses.replace(cfg, patch_size=32))  # tiny tiles; Qwen's preset is 448
    image = Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8))
    options = ["red", "blue card"]
    question = "What is the color of the dots on the red card?"
    result = method.run(image, question=question, options=options, scheme=scheme, cues=["red card"])  # type: ignore[arg-type]
    fp = result.forward_passes
    assert fp.extraction == 0 and fp.search >= 1 and fp.answer == (1 if scheme == "letter" else len(options))
    assert result.answer_view in ("multi", "full") and result.answer is not None
    if scheme == "logit":
        assert result.answer in options


# ---------------------------------------------------------------------------------------------- per-checkpoint prompts
#
# A checkpoint's focus_preset.json "zoomeye" section (cue source, prompt templates) and what the model then receives.

EMBEDDED = Path(__file__).resolve().parent.parent.parent / "focus_tool" / "embedded" / "model"
EXIST_Q = "Is there a {target} in the image?"


class PresetAdapter(ScriptedAdapter):
    """ScriptedAdapter with a backbone preset and a checkpoint folder (``model_id``)."""

    preset_name = "llava-1.5"

    def __init__(self, model_id: str | Path) -> None:
        super().__init__({})
        self.model_id = str(model_id)


def _checkpoint(tmp_path: Path, spec: dict[str, Any]) -> Path:
    (tmp_path / "focus_preset.json").write_text(json.dumps(spec))
    return tmp_path


@pytest.mark.parametrize(
    ("section", "expected", "error"),
    [
        ({}, {"cues": "prompt"}, None),  # no section: the official setting
        ({"cues": "focus_extraction"}, {"cues": "focus_extraction", "existence": EXISTENCE}, None),
        ({"prompts": {"existence": EXIST_Q}}, {"cues": "prompt", "existence": EXIST_Q, "latent": LATENT}, None),
        (  # the embedded model's mapping
            {"cues": "focus_extraction", "prompts": dict.fromkeys(("existence", "latent", "answering"), EXIST_Q)},
            {"cues": "focus_extraction", "existence": EXIST_Q, "latent": EXIST_Q, "answering": EXIST_Q},
            None,
        ),
        ({"prompts": {"answering": "Can {question} be answered from {target}?"}}, {"latent": LATENT}, None),
        ({"prompts": {"latent_node": "Zoom for {target}?", "cue": "Q: {question}"}}, {"cues": "prompt"}, None),
        ({"cue": "focus_extraction"}, None, "unknown key(s) ['cue']"),  # typo of "cues"
        ({"cues": "spacy"}, None, "must be one of prompt, focus_extraction"),
        ({"cues": "prompt", "depth_limit": 2}, None, "unknown key(s) ['depth_limit']"),  # only cues and prompts
        ({"prompts": {"existance": EXIST_Q}}, None, "unknown prompt name(s) ['existance']"),
        ({"prompts": ["Is there a {target}?"]}, None, "must be an object of NAME: TEMPLATE"),
        ({"prompts": {"existence": "Is there a {} in the image?"}}, None, "must use named fields"),  # positional
        ({"prompts": {"existence": "Is there a {question}?"}}, None, "must use {target}"),  # wrong field
        ({"prompts": {"existence": "Is there a card?"}}, None, "got none"),  # no field: same prompt for every cue
        ({"prompts": {"answering": "Is it {target} or {colour}?"}}, None, "{question} and/or {target}"),
        ({"prompts": {"latent": 3}}, None, "must be a string"),
        ({"prompts": {"existence": "Is there a {target"}}, None, "not a valid template"),
    ],
)
def test_zoomeye_section_table(
    tmp_path: Path, section: dict[str, Any], expected: dict[str, str] | None, error: str | None
) -> None:
    adapter = PresetAdapter(_checkpoint(tmp_path, {"preset": "default", "zoomeye": section}))
    with pytest.raises(ConfigError, match=re.escape(error)) if error else contextlib.nullcontext():
        cfg = zoomeye_config_for(adapter)
        assert expected is not None and cfg.cues == expected.get("cues", cfg.cues)
        for name, template in expected.items():
            assert name == "cues" or getattr(cfg.prompts, name) == template
        assert cfg.input_mode == "local" and cfg.bias == 0.2  # the backbone's settings stay


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"preset": "default", "zoomEye": {"cues": "prompt"}}, "unknown key(s) ['zoomEye']"),
        ({"preset": "default", "zoomeye": ["prompt"]}, "must be a JSON object"),
        (["default"], "must hold a JSON object"),
    ],
)
def test_malformed_preset_file_is_an_error(tmp_path: Path, spec: Any, error: str) -> None:
    (tmp_path / "focus_preset.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=re.escape(error)):
        zoomeye_config_for(PresetAdapter(tmp_path))


def test_no_preset_file_keeps_the_official_config(tmp_path: Path) -> None:
    cfg = zoomeye_config_for(PresetAdapter(tmp_path), depth_limit=2)
    assert cfg.cues == "prompt" and cfg.prompts == ZoomEyePrompts() and cfg.depth_limit == 2
    assert cfg.targets == TargetConfig()


def test_shipped_embedded_preset() -> None:
    """The embedded model's file: FOCUS keys untouched, ZoomEye asks it only its trained existence question, cues from
    FOCUS's Stage I with FOCUS's own parsing settings (type 2 only on "all")."""
    spec = json.loads((EMBEDDED / "focus_preset.json").read_text())
    assert spec["preset"] == "default" and spec["overrides"]["relevance.layers"] == [0, 1]
    cfg = zoomeye_config_for(PresetAdapter(EMBEDDED))
    assert cfg.cues == "focus_extraction"
    assert cfg.prompts.existence == cfg.prompts.latent == cfg.prompts.answering == EXIST_Q
    assert cfg.prompts.cue == CUE_PROMPT and cfg.targets.type2_rule == "all_only"


class RecordingAdapter(ScriptedAdapter):
    """Records every prompt text; the confidence kind comes from the text's first word (E / L / A = existence /
    latent / answering), the extraction reply from which extraction prompt was sent."""

    def __init__(self, table: dict[str, tuple[float, float, float]], *, focus_reply: str = "", cue_reply: str = ""):
        super().__init__(table)
        self.texts: list[str] = []
        self.generated: list[str] = []
        self.focus_reply, self.cue_reply = focus_reply, cue_reply

    def yes_no_margins(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        self.texts.extend(texts)
        out = []
        for im, text in zip(images, texts, strict=True):
            i = "ELA".index(text[0]) if text[0] in "ELA" else 0  # the embedded mapping asks existence only
            out.append(2 * math.atanh(self.table.get(self.node_of(im), (0.0, 0.0, 0.0))[i]))
        self.counter.add(len(images), 10 * len(images))
        return torch.tensor(out, dtype=torch.float64)

    def generate(self, image: Image.Image | None, text: str, *, max_new_tokens: int) -> str:
        self.counter.add(1, 10)
        if image is not None:
            return "A"
        self.generated.append(text)
        return self.focus_reply if text.startswith("Extract the objects") else self.cue_reply


OVERRIDES = ZoomEyePrompts(
    existence="E {target}?", latent="L {target}?", answering="A {question} | {target}?", decomposed="D {target}"
)


def test_override_prompts_are_what_the_model_receives() -> None:
    """One cue, the hand trace of test_stop_at_threshold (root answer, 4 existence, 4 latent, 0.0 answer: stop),
    every text from the override templates."""
    table = dict(TABLE)
    table["0.0"] = (0.2, 0.5, 0.7)
    adapter = RecordingAdapter(table)
    method = ZoomEyeMethod(adapter, ZoomEyeConfig(patch_size=10, prompts=OVERRIDES))
    result = method.run(_image(), question="Q?", options=["a", "b"], cues=["red card"])
    assert adapter.texts == ["A Q? | red card?"] + ["E red card?"] * 4 + ["L red card?"] * 4 + ["A Q? | red card?"]
    assert result.forward_passes.search == 10 and result.regions[0].box == BOXES["0.0"]


def test_override_prompts_with_several_cues_and_type2() -> None:
    """Two cues: the answering prompt gets the decomposed override in {question}; an "all" cue asks existence only."""
    adapter = RecordingAdapter(dict.fromkeys(BOXES, (0.0, 0.0, 0.7)))
    method = ZoomEyeMethod(adapter, ZoomEyeConfig(patch_size=10, prompts=OVERRIDES))
    method.run(_image(), question="Q?", options=["a", "b"], cues=["red card", "all dogs"])
    answering = {t for t in adapter.texts if t.startswith("A")}
    assert answering == {"A D red card | red card?"}
    assert {t for t in adapter.texts if t.startswith("E")} == {"E red card?", "E dog?"}
    assert sum(t == "E dog?" for t in adapter.texts) == 21  # type 2: 1 + 4 + 16


def test_embedded_mapping_collapses_latent_and_answering_to_existence() -> None:
    """With the shipped mapping every confidence is the existence question, so the trace is driven by existence:
    root 0.1 < 0.6; children ranked by existence alone (0.1: 0.8 first although its latent is -0.9); 0.1 answers with
    its existence 0.8 >= 0.6: stop. Still 2 passes per queued node (existence and latent asked separately)."""
    table = {"0": (0.1, 0.9, 0.9), "0.0": (0.5, 0.9, 0.9), "0.1": (0.8, -0.9, -0.9), "0.2": (0.0, 0.9, 0.9)}
    adapter = RecordingAdapter(table)
    cfg = replace(zoomeye_config_for(PresetAdapter(EMBEDDED)), patch_size=10)
    out = ZoomEyeMethod(adapter, cfg).search_type1(_image(), "red card", "How many dots are on the red card?")
    assert [(s.node, s.answering, s.event) for s in out.trace] == [
        ("0", pytest.approx(0.1), "pop"),
        ("0.1", pytest.approx(0.8), "stop"),
    ]
    assert set(adapter.texts) == {"Is there a red card in the image?"} and len(adapter.texts) == 1 + 8 + 1


@pytest.mark.parametrize(
    ("targets", "reply", "question", "cues", "types"),
    [
        (TargetConfig(), "I need the info about red card.", "What is the color?", ["red card"], ["single"]),
        (  # "all" marks type 2; parse_targets singularises, and the name is not stripped again ("card", not "car")
            TargetConfig(),
            "I need the info about red card and all blue cards.",
            "Q?",
            ["red card", "all blue card"],
            ["single", "all"],
        ),
        (TargetConfig(), "I need the info about red card.", "How many dots?", ["all red card"], ["all"]),  # keyword
        (
            TargetConfig(type2_rule="all_only"),
            "I need the info about red card.",
            "How many dots?",
            ["red card"],
            ["single"],
        ),
        (TargetConfig(), "Yes", "Q?", [], []),  # nothing parses: no search
    ],
)
def test_cues_from_focus_extraction(
    targets: TargetConfig, reply: str, question: str, cues: list[str], types: list[str]
) -> None:
    adapter = RecordingAdapter(dict.fromkeys(BOXES, (0.0, 0.0, 0.7)), focus_reply=reply, cue_reply="(unused)")
    method = ZoomEyeMethod(adapter, ZoomEyeConfig(patch_size=10, cues="focus_extraction", targets=targets))
    result = method.run(_image(), question=question, options=["a", "b"])
    assert adapter.generated == [extraction_prompt(question, targets)]  # FOCUS's Stage-I prompt, nothing else
    assert result.targets == cues and result.target_types == types
    assert result.forward_passes.extraction == 1  # the extraction pass, counted as FOCUS counts it
    names = {t.split(" ", 3)[3].removesuffix(" in the image? Answer Yes or No.") for t in adapter.texts if t[0] == "I"}
    assert names == {c.removeprefix("all ") for c in cues}
    assert (result.forward_passes.search == 0) == (not cues)


@pytest.mark.parametrize("cues", ["prompt", "focus_extraction"])
def test_no_cue_answers_on_the_full_image_and_warns(cues: str, caplog: pytest.LogCaptureFixture) -> None:
    adapter = RecordingAdapter({}, focus_reply="No", cue_reply="")  # parse_cues takes any short reply as a cue
    method = ZoomEyeMethod(adapter, ZoomEyeConfig(patch_size=10, cues=cues))  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG, logger="focus_tool.baselines.zoomeye"):
        first = method.run(_image(), question="Q?", options=["a", "b"])
        method.run(_image(), question="Q?", options=["a", "b"])
    assert first.targets == [] and first.answer_view == "full" and first.answer_boxes == []
    fp = first.forward_passes
    assert (fp.extraction, fp.search, fp.answer) == (1, 0, 1)
    levels = [r.levelno for r in caplog.records if "no visual cue" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG]  # once per method at warning level


# ---------------------------------------------------------------------------------------------- per-backbone table


class _UnlistedAdapter(PresetAdapter):
    preset_name = "zoomeye-unlisted"


def test_preset_without_zoomeye_row_is_an_error(tmp_path: Path) -> None:
    error = r"no ZoomEye settings for preset 'zoomeye-unlisted'.*register_zoomeye_preset"
    with pytest.raises(ConfigError, match=error):
        zoomeye_config_for(_UnlistedAdapter(tmp_path))


def test_register_zoomeye_preset(tmp_path: Path) -> None:
    register_preset("zoomeye-unlisted", FocusConfig())
    try:
        register_zoomeye_preset("zoomeye-unlisted", ZoomEyeConfig(bias=0.5))
        with pytest.raises(ConfigError, match="already registered"):
            register_zoomeye_preset("zoomeye-unlisted", ZoomEyeConfig())
        with pytest.raises(ConfigError, match="must be a ZoomEyeConfig"):
            register_zoomeye_preset("zoomeye-other", FocusConfig(), replace=True)  # type: ignore[arg-type]
        assert zoomeye_config_for(_UnlistedAdapter(tmp_path)).bias == 0.5
    finally:
        ZOOMEYE_PRESETS.pop("zoomeye-unlisted", None)
        unregister_preset("zoomeye-unlisted")


def test_patch_size_is_the_encoder_side() -> None:
    class NoFixedSide(ScriptedAdapter):
        @property
        def encoder_px(self) -> int | None:
            return None

    assert ZoomEyeMethod(NoFixedSide({})).patch_size == 336  # no fixed encoder input: LLaVA-1.5's side
    assert ZoomEyeMethod(ScriptedAdapter({})).patch_size == 10
    assert ZoomEyeMethod(ScriptedAdapter({}), ZoomEyeConfig(patch_size=50)).patch_size == 50
