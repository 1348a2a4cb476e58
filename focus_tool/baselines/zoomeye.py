"""ZoomEye (arXiv 2411.16044, github.com/om-ai-lab/ZoomEye @ 6762d79): confidence-ranked tree search over crops.

Faithful to ``ZoomEye/zoom_eye.py::zoom_eye_search_type1`` as documented in ``shared/docs/peers.md`` §1:

- **Tree** (§1.2): a node is terminal when ``max(w, h) < patch_size`` (the vision encoder's input side); otherwise it
  splits into ``split_num`` equal sub-patches, the last row/column absorbing the remainder (2x2; a 1-column x 4-row
  stack when h / w >= 2, 4 columns x 1 row when h / w <= 0.5 [I: our reading of "1x4"]). Search depth
  ``D = min(tree depth, depth_limit)``.
- **Confidences** (§1.3): one forward each, ``c = 2 * (softmax(l_Yes, l_No)[Yes] - 0.5) = tanh((l_Yes - l_No) / 2)``,
  read through :meth:`MLLMAdapter.yes_no_margins`. Local-input prompts (LLaVA-1.5): the crop alone.
- **Priority** (§1.4): ``w(d) * c_exist + (1 - w(d)) * c_latent`` with ``w(d) = b + (1 - b) * (d / D)^2``, computed
  once per node (2 passes) when the node first sits in a queue that is sorted.
- **Loop** (§1.5): pop the best node, answering confidence (1 pass), stop at ``>= tau``; after ``pop_limit`` pops
  relax ``tau`` by the next decrement, raise ``pop_limit`` by ``num_interval`` and accept the best popped node
  above the new ``tau``; give up below ``tau_lower``. Several targets: the decomposed question
  "What is the appearance of the {t}?", ``force_visit_bottom`` and (Local) ``force_no_root``.
- **Type-2 cues** ("all X", §1.6): post-order traversal to depth 2, existence of every node (1 pass each), keep a
  node when its existence >= max(best existence below it, ``visual_cue_threshold``).
- **Final answer** (§1.7): on the union of the found nodes' (expanded) boxes, or the full image if none.

Choices where the docs leave a gap (marked [I]): when the relaxed threshold admits no popped node, earlier candidates
(from a ``force_visit_bottom`` stop) are kept; the cue-extraction call has no in-context examples (ZoomEye's
``ic_examples/*.json`` are not vendored) and pronouns are dropped with a word list instead of spaCy; at most
``max_targets`` cues are searched; the Global+Local input mode (two images per confidence call) and its root filter
are not implemented, every backbone runs the Local mode.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from PIL import Image

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.baselines.common import AnswerScheme, answer_on
from focus_tool.errors import ConfigError
from focus_tool.result import FocusResult, ForwardPasses, Region

logger = logging.getLogger(__name__)

EXISTENCE = "Is there a {} in the image? Answer Yes or No."
LATENT = (
    "According to your common sense knowledge and the content of the image, is it possible to find a {} in the "
    "image? Answer Yes or No and tell the reason."
)
ANSWERING = (  # the doubled "the" is in the original
    "Question: {}\nCould you answer the question based on the the available visual information? Answer Yes or No."
)
DECOMPOSED = "What is the appearance of the {}?"
CUE_PROMPT = "Question: {}\nIf you want to answer the question, which objects' information do you need?"
_PRONOUNS = frozenset(
    [
        "it",
        "its",
        "they",
        "them",
        "this",
        "that",
        "these",
        "those",
        "he",
        "she",
        "him",
        "her",
        "i",
        "you",
        "we",
        "us",
        "me",
        "one",
    ]
)


@dataclass(frozen=True, kw_only=True)
class ZoomEyeConfig:
    """ZoomEye's hyperparameters (peers.md §1.8); defaults are LLaVA-1.5's (Local input)."""

    patch_size: int | None = None  # None = the adapter's encoder input side (336 for LLaVA-1.5)
    patch_scale: float | None = None  # crop box scale after the min-size expansion; None for LLaVA-1.5
    bias: float = 0.2  # b in w(d); 0.6 for LLaVA-OV / Qwen2.5-VL / InternVL2.5
    answer_upper: float = 0.6  # tau_upper
    answer_lower: float = 0.0  # tau_lower
    decrements: tuple[float, ...] = (0.1, 0.1, 0.2)
    pop_limit_per_depth: int = 3  # pop_limit = 3 * D
    num_interval: int = 2  # pop_limit increment on each relaxation
    depth_limit: int = 5
    split_num: Literal[4, 9, 16] = 4
    visual_cue_threshold: float = 0.6  # type-2 keep threshold
    type2_depth: int = 2
    max_targets: int = 4  # [I] cap on extracted cues
    cue_max_new_tokens: int = 64
    answer_max_new_tokens: int = 16

    def __post_init__(self) -> None:
        if self.depth_limit < 1:
            raise ConfigError(f"depth_limit must be >= 1, got {self.depth_limit}")
        if not self.decrements or any(d <= 0 for d in self.decrements):
            raise ConfigError(f"decrements must be positive and non-empty, got {self.decrements}")
        if self.patch_size is not None and self.patch_size < 2:
            raise ConfigError(f"patch_size must be >= 2, got {self.patch_size}")


@dataclass(eq=False)
class Node:
    """A tree node: ``bbox`` is ``[x, y, w, h]`` in original-image pixels; children are made on first access."""

    bbox: tuple[int, int, int, int]
    depth: int
    name: str
    patch_size: int
    split_num: int
    _children: list[Node] | None = field(default=None, repr=False)

    @property
    def is_leaf(self) -> bool:
        """Terminal: ``max(w, h) < patch_size``."""
        return max(self.bbox[2], self.bbox[3]) < self.patch_size

    @property
    def children(self) -> list[Node]:
        """Row-major sub-patches (empty for a leaf)."""
        if self._children is None:
            self._children = [] if self.is_leaf else self._split()
        return self._children

    def _split(self) -> list[Node]:
        x, y, w, h = self.bbox
        rows, cols = split_grid(w, h, self.split_num)
        sw, sh = w // cols, h // rows
        out = []
        for r in range(rows):
            for c in range(cols):
                cw = sw if c < cols - 1 else w - sw * (cols - 1)
                ch = sh if r < rows - 1 else h - sh * (rows - 1)
                out.append(
                    Node(
                        (x + c * sw, y + r * sh, cw, ch),
                        self.depth + 1,
                        f"{self.name}.{r * cols + c}",
                        self.patch_size,
                        self.split_num,
                    )
                )
        return out

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        """The box as ``(x0, y0, x1, y1)``."""
        x, y, w, h = self.bbox
        return x, y, x + w, y + h


def split_grid(w: int, h: int, split_num: int) -> tuple[int, int]:
    """(rows, cols) of the split: square grid, or the elongated variant for aspect ratios >= 2 or <= 0.5."""
    ratio = h / max(w, 1)
    elongated = {4: (4, 1), 9: (4, 2), 16: (8, 2)}[split_num]
    if ratio >= 2:
        return elongated
    if ratio <= 0.5:
        return elongated[1], elongated[0]
    side = math.isqrt(split_num)
    return side, side


def tree_depth(w: int, h: int, patch_size: int, split_num: int) -> int:
    """Depth of the full tree over a ``w`` x ``h`` image (the largest child is the last one)."""
    depth = 0
    while max(w, h) >= patch_size:
        rows, cols = split_grid(w, h, split_num)
        w, h = w - (w // cols) * (cols - 1), h - (h // rows) * (rows - 1)
        depth += 1
    return depth


def confidence(margins: torch.Tensor) -> list[float]:
    """ZoomEye's confidence ``2 * (p_Yes - 0.5)`` from ``l_Yes - l_No`` margins (n,)."""
    return [float(v) for v in torch.tanh(margins.double() / 2)]


def priority_weight(depth: int, max_depth: int, bias: float) -> float:
    """w(d) = b + (1 - b) * (d / D)^2."""
    return bias + (1 - bias) * (depth / max_depth) ** 2 if max_depth > 0 else 1.0


def parse_cues(reply: str, max_targets: int) -> list[str]:
    """Visual cues from the extraction reply ("... the following objects: A and B."), pronouns dropped."""
    text = reply.strip()
    m = re.search(r"following objects?\s*:?\s*(.*)", text, flags=re.IGNORECASE | re.DOTALL)
    if m:
        text = m.group(1)
    text = text.split("\n")[0].strip().rstrip(".").strip()
    cues: list[str] = []
    for part in re.split(r" and |, ", text):
        cue = part.strip().strip(".").strip()
        words = cue.lower().split()
        if not words or any(w in _PRONOUNS for w in words) or len(words) > 6:
            continue
        if cue not in cues:
            cues.append(cue)
    return cues[:max_targets]


Event = Literal["pop", "stop", "relax_accept", "relax_continue", "give_up", "bottom_stop"]
"""pop: kept searching; stop: confident, done; relax_accept / relax_continue / give_up: the budget ran out and the
threshold was relaxed (a popped node accepted / search goes on / tau fell below tau_lower); bottom_stop: a candidate
was held back until a bottom node was visited (several cues)."""


@dataclass(frozen=True)
class TraceStep:
    """One pop of the search: the node, its answering confidence (None if not asked), the threshold in force."""

    node: str
    answering: float | None
    tau: float
    event: Event = "pop"
    new_tau: float | None = None


@dataclass
class SearchOutcome:
    """The result of one type-1 search: the chosen node (or None) and the step-by-step trace."""

    node: Node | None
    trace: list[TraceStep]
    pops: int
    max_depth: int


class ZoomEyeMethod:
    """ZoomEye over any adapter with ``yes_no_margins`` and ``generate`` (Local input mode)."""

    name = "zoomeye"

    def __init__(self, adapter: MLLMAdapter, config: ZoomEyeConfig | None = None) -> None:
        self.adapter = adapter
        self.config = config or ZoomEyeConfig()
        self.patch_size = self.config.patch_size or int(getattr(adapter, "input_px", 336))

    # ------------------------------------------------------------------ model calls (all counted by the adapter)

    def _confidences(self, image: Image.Image, nodes: Sequence[Node], texts: Sequence[str]) -> list[float]:
        crops = [self.node_crop(image, n) for n in nodes]
        with self.adapter.counter.in_phase("search"):
            return confidence(self.adapter.yes_no_margins(crops, list(texts)))

    def node_crop(self, image: Image.Image, node: Node) -> Image.Image:
        """The node's patch: expanded about its centre to >= patch_size per side, times patch_scale, clipped."""
        x0, y0, x1, y1 = self.crop_box(node, image.size)
        return image.crop((x0, y0, x1, y1))

    def crop_box(self, node: Node, image_wh: tuple[int, int]) -> tuple[int, int, int, int]:
        """Integer xyxy of the node's expanded patch in image pixels."""
        x, y, w, h = node.bbox
        cx, cy = x + w / 2, y + h / 2
        sw, sh = float(max(w, self.patch_size)), float(max(h, self.patch_size))
        if self.config.patch_scale:
            sw, sh = sw * self.config.patch_scale, sh * self.config.patch_scale
        iw, ih = image_wh
        x0, y0 = max(0, math.floor(cx - sw / 2)), max(0, math.floor(cy - sh / 2))
        x1, y1 = min(iw, math.ceil(cx + sw / 2)), min(ih, math.ceil(cy + sh / 2))
        return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)

    # ------------------------------------------------------------------ search

    def root(self, image_wh: tuple[int, int]) -> Node:
        """The root node over the whole image."""
        return Node((0, 0, image_wh[0], image_wh[1]), 0, "0", self.patch_size, self.config.split_num)

    def search_type1(
        self,
        image: Image.Image,
        cue: str,
        question: str,
        *,
        force_visit_bottom: bool = False,
        force_no_root: bool = False,
    ) -> SearchOutcome:
        """ZoomEye's ``zoom_eye_search_type1`` for one visual cue; returns the chosen node and the trace."""
        cfg = self.config
        root = self.root(image.size)
        max_depth = min(tree_depth(*image.size, self.patch_size, cfg.split_num), cfg.depth_limit)
        tau, pop_limit, decrements = cfg.answer_upper, cfg.pop_limit_per_depth * max_depth, list(cfg.decrements)
        queue: list[Node] = [root]
        popped: list[Node] = []
        answering: dict[int, float] = {}
        priority: dict[int, float] = {}
        candidates: list[Node] = []
        visited_bottom = False
        trace: list[TraceStep] = []
        ask = ANSWERING.format(question)

        while queue:
            node = queue.pop(0)
            popped.append(node)
            tau_at_pop = tau
            asked: float | None = None
            if force_no_root and node is root:
                answering[id(node)] = -1.0
            else:
                asked = answering[id(node)] = self._confidences(image, [node], [ask])[0]
            event: Event = "pop"
            if asked is not None and asked >= tau:
                candidates.append(node)
                done = not force_visit_bottom or visited_bottom
                if done:
                    trace.append(TraceStep(node.name, asked, tau_at_pop, "stop"))
                    break
            elif len(popped) >= pop_limit:  # budget exhausted: relax the threshold
                tau -= decrements[0]
                if len(decrements) > 1:
                    decrements.pop(0)
                pop_limit += cfg.num_interval
                above = [p for p in popped if answering[id(p)] >= tau]
                if above:
                    candidates = [max(above, key=lambda p: answering[id(p)])]  # ties: first popped
                event = "relax_accept" if candidates else "give_up" if tau < cfg.answer_lower else "relax_continue"
                trace.append(TraceStep(node.name, asked, tau_at_pop, event, tau))
                if event != "relax_continue":
                    break
            if event == "pop":
                trace.append(TraceStep(node.name, asked, tau_at_pop))
            if node.is_leaf or node.depth >= max_depth:
                visited_bottom = True
                if force_visit_bottom and candidates:
                    last = trace[-1]
                    trace[-1] = TraceStep(last.node, last.answering, last.tau, "bottom_stop", last.new_tau)
                    break
            else:
                queue.extend(node.children)
            self._rank(image, queue, priority, cue, max_depth)
        best = None
        for c in candidates:  # deepest candidate, ties: first
            if best is None or c.depth > best.depth:
                best = c
        return SearchOutcome(best, trace, len(popped), max_depth)

    def _rank(
        self, image: Image.Image, queue: list[Node], priority: dict[int, float], cue: str, max_depth: int
    ) -> None:
        """Sort ``queue`` by priority, descending (stable); new nodes cost 2 passes each (existence + latent)."""
        new = [n for n in queue if id(n) not in priority]
        if new:
            texts = [EXISTENCE.format(cue)] * len(new) + [LATENT.format(cue)] * len(new)
            conf = self._confidences(image, new + new, texts)
            for i, n in enumerate(new):
                w = priority_weight(n.depth, max_depth, self.config.bias)
                priority[id(n)] = w * conf[i] + (1 - w) * conf[len(new) + i]
        queue.sort(key=lambda n: -priority[id(n)])

    def search_type2(self, image: Image.Image, cue: str) -> list[Node]:
        """ "all X" cues: post-order to ``type2_depth``, keep nodes whose existence beats everything below them."""
        kept: list[Node] = []
        text = EXISTENCE.format(cue)

        def visit(node: Node) -> float:
            below = -math.inf
            if node.depth < self.config.type2_depth:
                for child in node.children:
                    below = max(below, visit(child))
            e = self._confidences(image, [node], [text])[0]
            if e >= max(below, self.config.visual_cue_threshold):
                kept.append(node)
            return max(e, below)

        visit(self.root(image.size))
        return kept

    def extract_cues(self, question: str) -> list[str]:
        """One text-only greedy generate (aux phase) and the parsed visual cues."""
        with self.adapter.counter.in_phase("aux"):
            reply = self.adapter.generate(
                None, CUE_PROMPT.format(question), max_new_tokens=self.config.cue_max_new_tokens
            )
        cues = parse_cues(reply, self.config.max_targets)
        logger.debug("zoomeye cues: %r -> %s", reply, cues)
        return cues

    # ------------------------------------------------------------------ the engine

    def run(
        self,
        image: Image.Image,
        *,
        question: str,
        options: Sequence[str] | None,
        scheme: AnswerScheme = "letter",
        suffix: str = "",
        cues: Sequence[str] | None = None,
    ) -> FocusResult:
        """Cue extraction (unless ``cues``), one search per cue, the answer on the found region(s)."""
        self.adapter.counter.reset()
        t0 = time.perf_counter()
        cue_list = list(cues) if cues is not None else self.extract_cues(question)
        t1 = time.perf_counter()
        multi = len(cue_list) > 1
        found: list[tuple[str, Node, float | None]] = []
        for cue in cue_list:
            if cue.lower().startswith("all "):
                name = cue[4:].strip()
                name = name[:-1] if name.endswith("s") else name  # naive plural strip, as in ZoomEye
                found.extend((cue, n, None) for n in self.search_type2(image, name))
                continue
            q = DECOMPOSED.format(cue) if multi else question
            out = self.search_type1(image, cue, q, force_visit_bottom=multi, force_no_root=multi)
            if out.node is not None:
                last = [s.answering for s in out.trace if s.node == out.node.name and s.answering is not None]
                found.append((cue, out.node, last[-1] if last else None))
        t2 = time.perf_counter()
        boxes = np.array([self.crop_box(n, image.size) for _, n, _ in found], dtype=np.float64).reshape(-1, 4)
        if len(boxes):
            union = (int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max()))
            view = image.crop(union)
        else:
            view = image
        answer = answer_on(
            self.adapter,
            [view],
            question=question,
            options=options,
            scheme=scheme,
            suffix=suffix,
            max_new_tokens=self.config.answer_max_new_tokens,
        )
        t3 = time.perf_counter()
        regions = [
            Region(
                id=f"r{i + 1}",
                box=n.xyxy,
                confidence=None if c is None else min(1.0, max(0.0, (c + 1) / 2)),
                target=cue,
                rank=1,
                anchor_score=0.0,
                selected=True,
            )
            for i, (cue, n, c) in enumerate(found)
        ]
        counts = self.adapter.counter.counts
        return FocusResult(
            method="zoomeye",
            model_id=self.adapter.model_id,
            image_wh=image.size,
            question=question,
            answer=answer,
            targets=cue_list,
            target_types=["all" if c.lower().startswith("all ") else "single" for c in cue_list],
            regions=regions,
            answer_view="crop" if len(boxes) else "full",
            answer_boxes=[union] if len(boxes) else [],
            forward_passes=ForwardPasses(search=counts["search"], answer=counts["answer"], aux=counts["aux"]),
            prefill_tokens=self.adapter.counter.prefill_tokens,
            timings_s={"targets": round(t1 - t0, 4), "search": round(t2 - t1, 4), "answer": round(t3 - t2, 4)},
        )
