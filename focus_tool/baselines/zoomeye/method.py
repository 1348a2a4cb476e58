"""The ZoomEye method: confidences, the type-1 / type-2 searches, the root filter and the final answer."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Literal

from PIL import Image

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.baselines.common import AnswerScheme, answer_on, answer_on_parts
from focus_tool.baselines.zoomeye.config import ZoomEyeConfig
from focus_tool.baselines.zoomeye.prompts import MAIN_CAPTION, ZOOM_CAPTION, ConfidenceKind, InputMode
from focus_tool.baselines.zoomeye.search import Event, SearchOutcome, TraceStep
from focus_tool.baselines.zoomeye.tree import Node, VisualCue, confidence, parse_cues, priority_weight, tree_depth
from focus_tool.baselines.zoomeye.views import Box, ZoomViews, root_view, zoom_views
from focus_tool.result import FocusResult, Region
from focus_tool.steps.targets import extraction_prompt, parse_targets

logger = logging.getLogger("focus_tool.baselines.zoomeye")


class ZoomEyeMethod:
    """ZoomEye over any adapter with ``yes_no_margins`` and ``generate`` (Local input), plus the interleaved
    multi-image methods for the Global+Local input.
    """

    name = "zoomeye"

    def __init__(self, adapter: MLLMAdapter, config: ZoomEyeConfig | None = None) -> None:
        self.adapter = adapter
        self.config = config or ZoomEyeConfig()
        side = adapter.encoder_px or 336  # 336: LLaVA-1.5's side, for adapters without a fixed encoder input
        self.patch_size = self.config.patch_size or int(side)
        self.input_mode: InputMode = self.config.input_mode or (
            "global_local" if adapter.answer_mode == "multi" else "local"
        )
        self._warned_no_cue = False

    # ------------------------------------------------------------------ model calls (all counted by the adapter)

    def _confidences(
        self,
        image: Image.Image,
        nodes: Sequence[Node],
        kind: ConfidenceKind,
        *,
        target: str,
        question: str = "",
        colour: Literal["red", "blue"] = "red",
    ) -> list[float]:
        """ZoomEye confidences of ``kind`` for ``nodes`` in the configured input mode; the prompt
        (:meth:`ZoomEyePrompts.confidence_template`) is filled with the cue ``target`` and ``question``.
        """
        if not nodes:
            return []
        prompts = self.config.prompts

        def text(where: Literal["local", "root", "node"]) -> str:
            return prompts.confidence_template(kind, where).format(target=target, question=question)

        with self.adapter.counter.in_phase("search"):
            if self.input_mode == "local":
                crops = [self.node_crop(image, n) for n in nodes]
                return confidence(self.adapter.yes_no_margins(crops, [text("local")] * len(nodes)))
            out: dict[int, float] = {}
            roots = [i for i, n in enumerate(nodes) if n.depth == 0]
            if roots:  # the root alone, at the adapter's own (anyres / native) resolution, "global" prompts
                texts = [text("root")] * len(roots)
                out.update(
                    zip(roots, confidence(self.adapter.yes_no_margins([image] * len(roots), texts)), strict=True)
                )
            others = [i for i, n in enumerate(nodes) if n.depth > 0]
            if others:
                node_text = text("node")
                parts = [[*self.zoom_parts(image, [nodes[i]], colour=colour)[0], node_text] for i in others]
                out.update(zip(others, confidence(self.adapter.yes_no_margins_interleaved(parts)), strict=True))
            return [out[i] for i in range(len(nodes))]

    def zoom_parts(
        self, image: Image.Image, nodes: Sequence[Node], *, colour: Literal["red", "blue"]
    ) -> tuple[list[Image.Image | str], ZoomViews]:
        """Global+Local prompt head for non-root ``nodes``: [main, main caption, zoomed view, zoom caption]."""
        cfg = self.config
        views = zoom_views(
            image,
            [self.crop_box(n, image.size) for n in nodes],
            main_px=self.patch_size,
            main_view=cfg.main_view,
            colour=colour,
            fill=cfg.pad_rgb,
            merge_buffer_px=cfg.merge_buffer_px,
        )
        return [views.main, MAIN_CAPTION.format(colour), views.zoom, ZOOM_CAPTION], views

    def box_colour(self, question: str) -> Literal["red", "blue"]:
        """The outline colour: configured, or (auto) blue when the question mentions a "red rectangle"."""
        if self.config.box_color != "auto":
            return self.config.box_color
        return "blue" if "red rectangle" in question.lower() else "red"

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
        colour: Literal["red", "blue"] = "red",
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

        while queue:
            node = queue.pop(0)
            popped.append(node)
            tau_at_pop = tau
            asked: float | None = None
            if force_no_root and node is root:
                answering[id(node)] = -1.0
            else:
                asked = answering[id(node)] = self._confidences(
                    image, [node], "answering", target=cue, question=question, colour=colour
                )[0]
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
            self._rank(image, queue, priority, cue, max_depth, colour=colour)
        best = None
        for c in candidates:  # deepest candidate, ties: first
            if best is None or c.depth > best.depth:
                best = c
        return SearchOutcome(best, trace, len(popped), max_depth)

    def _rank(
        self,
        image: Image.Image,
        queue: list[Node],
        priority: dict[int, float],
        cue: str,
        max_depth: int,
        *,
        colour: Literal["red", "blue"] = "red",
    ) -> None:
        """Sort ``queue`` by priority, descending (stable); new nodes cost 2 passes each (existence + latent)."""
        new = [n for n in queue if id(n) not in priority]
        if new:
            exist = self._confidences(image, new, "existence", target=cue, colour=colour)
            latent = self._confidences(image, new, "latent", target=cue, colour=colour)
            for n, e, lat in zip(new, exist, latent, strict=True):
                w = priority_weight(n.depth, max_depth, self.config.bias)
                priority[id(n)] = w * e + (1 - w) * lat
        queue.sort(key=lambda n: -priority[id(n)])

    def search_type2(self, image: Image.Image, cue: str, *, colour: Literal["red", "blue"] = "red") -> list[Node]:
        """Cues of the "all X" kind: post-order to ``type2_depth``, keep nodes whose existence beats all below."""
        kept: list[Node] = []

        def visit(node: Node) -> float:
            below = -math.inf
            if node.depth < self.config.type2_depth:
                for child in node.children:
                    below = max(below, visit(child))
            e = self._confidences(image, [node], "existence", target=cue, colour=colour)[0]
            if e >= max(below, self.config.visual_cue_threshold):
                kept.append(node)
            return max(e, below)

        visit(self.root(image.size))
        return kept

    def root_filter(self, image: Image.Image, cues: Sequence[VisualCue]) -> bool:
        """Global+Local, several cues: True when some ordinary cue is answerable at the root (search skipped).

        One pass per ordinary cue: the answering confidence of the decomposed question ("What is the appearance of
        the {cue}?") on the root's small view (:func:`root_view`), compared with ``tau_upper``; "all X" cues are not
        asked.
        """
        ordinary = [c for c in cues if not c.all_instances]
        if not ordinary:
            return False
        cfg = self.config
        p = cfg.prompts
        view = root_view(image, main_px=self.patch_size, main_view=cfg.main_view, fill=cfg.pad_rgb)
        texts = [p.answering.format(question=p.decomposed.format(target=c.name), target=c.name) for c in ordinary]
        with self.adapter.counter.in_phase("search"):
            conf = confidence(self.adapter.yes_no_margins([view] * len(ordinary), texts))
        logger.debug("zoomeye root filter: %s", dict(zip([c.text for c in ordinary], conf, strict=True)))
        return any(c >= cfg.answer_upper for c in conf)

    def extract_cues(self, question: str) -> list[VisualCue]:
        """One text-only greedy generate (extraction phase) and the parsed visual cues, from ``config.cues``.

        - ``"prompt"`` (official): ZoomEye's cue prompt, parsed by :func:`parse_cues`;
        - ``"focus_extraction"``: FOCUS's Stage-I prompt and :func:`~focus_tool.steps.targets.parse_targets` with
          ``config.targets`` (the same call and parsing as FOCUS, counted as extraction as FOCUS's is); a type-2 target
          becomes the cue "all {phrase}" (already singular: no second plural strip).
        """
        cfg = self.config
        with self.adapter.counter.in_phase("extraction"):
            if cfg.cues == "focus_extraction":
                prompt, max_new = extraction_prompt(question, cfg.targets), cfg.targets.max_new_tokens
            else:
                prompt, max_new = cfg.prompts.cue.format(question=question), cfg.cue_max_new_tokens
            reply = self.adapter.generate(None, prompt, max_new_tokens=max_new)
        if cfg.cues == "focus_extraction":
            targets = parse_targets(reply, question, cfg.targets)
            cues = [
                VisualCue(f"all {t.phrase}" if t.all_instances else t.phrase, t.phrase, t.all_instances)
                for t in targets
            ][: cfg.max_targets]
        else:
            cues = [VisualCue.from_text(c) for c in parse_cues(reply, cfg.max_targets)]
        logger.debug("zoomeye cues (%s): %r -> %s", cfg.cues, reply, [c.text for c in cues])
        if not cues:
            # as upstream: get_zoom_eye_response then loops over no target and answers on the full image (its
            # "direct answering" path): kept, and said
            level = logging.WARNING if not self._warned_no_cue else logging.DEBUG
            self._warned_no_cue = True
            logger.log(
                level,
                "zoomeye: no visual cue parsed from the %s reply %r; no search, answering on the full image "
                "(logged once per method at warning level)",
                cfg.cues,
                reply,
            )
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
        """Cue extraction (unless ``cues``, e.g. ``["red card", "all dogs"]``), the root filter (Global+Local), one
        search per cue, the answer.
        """
        self.adapter.counter.reset()
        t0 = time.perf_counter()
        cue_list = [VisualCue.from_text(c) for c in cues] if cues is not None else self.extract_cues(question)
        t1 = time.perf_counter()
        multi = len(cue_list) > 1
        local = self.input_mode == "local"
        colour = self.box_colour(question)
        searched = [] if not local and multi and self.root_filter(image, cue_list) else cue_list
        found: list[tuple[str, Node, float | None]] = []
        for cue in searched:
            if cue.all_instances:
                found.extend((cue.text, n, None) for n in self.search_type2(image, cue.name, colour=colour))
                continue
            q = self.config.prompts.decomposed.format(target=cue.name) if multi else question
            out = self.search_type1(
                image, cue.name, q, force_visit_bottom=multi, force_no_root=multi and local, colour=colour
            )
            if out.node is not None:
                last = [s.answering for s in out.trace if s.node == out.node.name and s.answering is not None]
                found.append((cue.text, out.node, last[-1] if last else None))
        t2 = time.perf_counter()
        answer, view_kind, answer_boxes = self._final_answer(
            image,
            [n for _, n, _ in found],
            question=question,
            options=options,
            scheme=scheme,
            suffix=suffix,
            colour=colour,
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
        return FocusResult.from_run(
            method="zoomeye",
            model_id=self.adapter.model_id,
            image_wh=image.size,
            counter=self.adapter.counter,
            timings_s={"targets": t1 - t0, "search": t2 - t1, "answer": t3 - t2},
            question=question,
            answer=answer,
            targets=[c.text for c in cue_list],
            target_types=["all" if c.all_instances else "single" for c in cue_list],
            regions=regions,
            answer_view=view_kind,
            answer_boxes=answer_boxes,
        )

    def _final_answer(
        self,
        image: Image.Image,
        nodes: Sequence[Node],
        *,
        question: str,
        options: Sequence[str] | None,
        scheme: AnswerScheme,
        suffix: str,
        colour: Literal["red", "blue"],
    ) -> tuple[str, Literal["full", "crop", "multi"], list[Box]]:
        """Answer on the found nodes as upstream ``zoom_model*.py``: (answer, answer_view, answer boxes in image px)."""
        max_new = self.config.answer_max_new_tokens
        if self.input_mode == "global_local" and nodes and all(n.depth > 0 for n in nodes):
            parts, views = self.zoom_parts(image, nodes, colour=colour)
            answer = answer_on_parts(
                self.adapter, parts, question=question, options=options, scheme=scheme, suffix=suffix,
                max_new_tokens=max_new,
            )  # fmt: skip
            return answer, "multi", views.boxes_xyxy
        union: Box | None = None
        if self.input_mode == "local" and nodes:  # the union of the expanded patches
            b = [self.crop_box(n, image.size) for n in nodes]
            union = (min(x[0] for x in b), min(x[1] for x in b), max(x[2] for x in b), max(x[3] for x in b))
        # Global+Local with nothing found (or the root): the full image alone, "global" prompt
        view = image.crop(union) if union else image
        answer = answer_on(
            self.adapter, [view], question=question, options=options, scheme=scheme, suffix=suffix,
            max_new_tokens=max_new,
        )  # fmt: skip
        return answer, ("crop" if union else "full"), ([union] if union else [])
