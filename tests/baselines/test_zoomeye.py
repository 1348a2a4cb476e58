"""ZoomEye's search on a scripted fake adapter, against traces worked out by hand from peers.md §1.2-1.5.

Setup (hand-derived): a 36 x 36 image, patch_size 10, 2x2 split. Tree: root "0" (36 px) -> "0.k" (18 px, depth 1)
-> "0.k.j" (9 px < 10: leaves, depth 2). D = min(2, 5) = 2, pop_limit = 3 * D = 6, tau = 0.6, b = 0.2:
w(1) = 0.2 + 0.8 * (1/2)^2 = 0.4, w(2) = 1.0 (latent ignored at the leaves).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from focus_tool.adapters.base import ForwardCounter, MLLMAdapter, Prefill
from focus_tool.baselines.zoomeye import (
    ZoomEyeConfig,
    ZoomEyeMethod,
    parse_cues,
    priority_weight,
    split_grid,
    tree_depth,
)
from focus_tool.grid import PatchGrid

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
    assert (fp.aux, fp.search, fp.answer) == (1, 40, 1)


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
