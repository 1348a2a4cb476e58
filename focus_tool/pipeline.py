"""FocusPipeline: the engine. Runs the six steps over an adapter and returns one :class:`FocusResult`.

    targets (I) -> relevance prefill + V-V map (II, III) -> proposals (IV) -> existence ranking (V) -> answer (VI)

Each step is a pure function in ``focus_tool.steps``; this module only wires them, converts coordinates through
the adapter's :class:`PatchGrid`, counts forward passes per phase and times each step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.config import FocusConfig
from focus_tool.errors import ConfigError, InputRejected
from focus_tool.inputs import ImageInput, InputPolicy, load_image
from focus_tool.prompts import LETTERS, existence_prompt, format_options
from focus_tool.result import (
    AnswerEvidence,
    FocusResult,
    QuestionState,
    Region,
    RelevanceMapOut,
    ResultStatus,
    ResultWarning,
    TargetStatus,
)
from focus_tool.steps.answer import answer_view, crop, focus_views
from focus_tool.steps.evidence import confidence_warnings, option_evidence, reply_evidence
from focus_tool.steps.proposals import propose_regions
from focus_tool.steps.ranking import rank_adaptive, rank_type1, rank_type2
from focus_tool.steps.regions import Regions
from focus_tool.steps.relevance import relevance_map, to_grid
from focus_tool.steps.request import Request, admit
from focus_tool.steps.status import target_status
from focus_tool.steps.targets import Target, extraction_prompt, grounded, noun_phrases, parse_targets
from focus_tool.world import World, read_world

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, float], None]
"""``progress(message, fraction)``: called as each step starts ("targets", "search <target>", "answer") and with
fraction 1.0 at the end; ``fraction`` in [0, 1] is the share of the call's steps already done."""


@dataclass
class _TargetOutcome:
    target: Target
    regions: list[Region]
    selected_boxes: np.ndarray  # (M, 4) image px, best first
    selected_conf: np.ndarray  # (M,) their c_Yes; NaN when not scored (n_steps = 1 without overrun)
    map_out: RelevanceMapOut
    full_conf: float
    status: TargetStatus
    warnings: list[ResultWarning]


class FocusPipeline:
    """FOCUS over one adapter. Thread-safe: one inference at a time (the adapter's counter is shared).

    ``world`` is what the model can be asked about (:mod:`focus_tool.world`): by default the closed world its
    checkpoint folder declares (``focus_world.json``; the embedded model has one), None for an open-world model.
    """

    def __init__(
        self,
        adapter: MLLMAdapter,
        config: FocusConfig | None = None,
        policy: InputPolicy | None = None,
        *,
        world: World | Literal["checkpoint"] | None = "checkpoint",
    ) -> None:
        self.adapter = adapter
        self.config = config or FocusConfig()
        self.policy = policy or InputPolicy()
        self.world = read_world(adapter.model_id) if world == "checkpoint" else world
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        attn_implementation: str = "sdpa",
        dtype: str | None = None,
        pipeline: str = "preset",
        overrides: dict[str, Any] | None = None,
    ) -> FocusPipeline:
        """Load a checkpoint and its preset: the one way to build a pipeline from a model folder or hub id.

        Args:
            model: checkpoint folder or hub id (None: the embedded model).
            device: torch device.
            attn_implementation: "sdpa", "eager" or "flash_attention_2".
            dtype: torch dtype name (None: the checkpoint's).
            pipeline: "preset", "paper" or "lean" (:data:`focus_tool.config.PIPELINES`).
            overrides: dotted-path settings, e.g. ``{"proposal.s_max": 7}``.

        Raises:
            ModelLoadError: the checkpoint cannot be loaded.
            ConfigError: unknown pipeline variant or override.
        """
        from focus_tool.adapters.registry import load_adapter
        from focus_tool.presets import apply_overrides, config_for, pipeline_variant

        adapter = load_adapter(model, device=device, attn_implementation=attn_implementation, dtype=dtype)
        cfg = pipeline_variant(config_for(adapter), pipeline)
        return cls(adapter, apply_overrides(cfg, overrides) if overrides else cfg)

    # ------------------------------------------------------------------ public API

    def zoom(
        self,
        image: ImageInput,
        *,
        question: str | None = None,
        target: str | Sequence[str] | None = None,
        options: Sequence[str] | None = None,
        answer: bool = True,
        progress: ProgressFn | None = None,
    ) -> FocusResult:
        """Find the regions relevant to ``question`` (or to ``target``) and answer ``question`` on them.

        Args:
            image: a path, bytes or PIL image (checked under :attr:`policy`), or an admitted image (trusted).
            question: the question; its targets are extracted by the model unless ``target`` is given.
            target: object phrase(s) to look for (skips Stage I); with no question, no answer is produced.
            options: multiple-choice options: shown as (A) (B) ... with the answer instruction (``scheme="letter"``)
                or scored as replies (``scheme="logit"``), per ``config.answer.scheme``.
            answer: False stops before Stage VI: regions, maps and the answer view's boxes, no answer pass.
            progress: called as each step starts, see :data:`ProgressFn`.
        """
        if question is None and target is None:
            raise InputRejected("give a question or a target to look for")
        req = self.admit(question, target, options)
        q, options = req.question, req.options
        img = load_image(image, self.policy)
        report: ProgressFn = progress or (lambda _m, _f: None)
        with self._lock:
            self.adapter.counter.reset()
            timings: dict[str, float] = {}
            t0 = time.perf_counter()
            report("targets", 0.0)
            notes: list[ResultWarning] = []
            targets = self._targets(q, req.targets, notes)
            timings["targets"] = time.perf_counter() - t0
            if not targets:
                notes.append(
                    ResultWarning(
                        code="no_target_in_question",
                        message="no object to look for was found in the question, so nothing was searched and "
                        "the answer is on the whole image; name the object (e.g. 'the red card') or pass a target",
                    )
                )
            n_steps = len(targets) + 2
            outcomes = []
            for i, t in enumerate(targets):
                report(f"search {t.phrase}", (1 + i) / n_steps)
                outcomes.append(self._search(img, t, timings))
            report("answer" if q is not None and answer else "regions", (n_steps - 1) / n_steps)
            result = self._answer(img, q, options, targets, outcomes, timings, notes, run_answer=answer)
            report("done", 1.0)
        return result

    def vanilla(self, image: ImageInput, *, question: str, options: Sequence[str] | None = None) -> FocusResult:
        """Answer on the whole image (the baseline FOCUS is compared with)."""
        req = self.admit(question, None, options)
        q, options = str(req.question), req.options
        img = load_image(image, self.policy)
        with self._lock:
            self.adapter.counter.reset()
            t0 = time.perf_counter()
            with self.adapter.counter.in_phase("answer"):
                answer, evidence = self._answer_on([img], q, options)
            return self._result(
                img,
                method="vanilla",
                question=q,
                answer=answer,
                answer_evidence=evidence,
                answer_view="full",
                timings_s={"answer": time.perf_counter() - t0},
                status=ResultStatus(question="answered_on_whole_image", warnings=confidence_warnings(evidence)),
            )

    def admit(self, question: object, target: object, options: object) -> Request:
        """:func:`focus_tool.steps.request.admit` against this pipeline's world, tokenizer and answer scheme."""
        return admit(
            question,
            target,
            options,
            policy=self.policy,
            world=self.world,
            unknown_words=self.adapter.unknown_words,
            min_options=2 if self.config.answer.scheme == "logit" else 1,
        )

    # ------------------------------------------------------------------ steps

    def _targets(self, question: str | None, phrases: list[str] | None, notes: list[ResultWarning]) -> list[Target]:
        if phrases is not None:
            targets = [Target(p) for p in phrases]
            if question is not None:
                parsed = parse_targets(
                    "info about " + " and ".join(t.phrase for t in targets), question, self.config.targets
                )
                targets = parsed or targets
            return targets
        if question is None:
            raise InputRejected("give a question or a target to look for")
        with self.adapter.counter.in_phase("extraction"):
            reply = self.adapter.generate(
                None,
                extraction_prompt(question, self.config.targets),
                max_new_tokens=self.config.targets.max_new_tokens,
            )
        parsed = parse_targets(reply, question, self.config.targets)
        logger.debug("target extraction: %r -> %s", reply, parsed)
        targets, invented = grounded(parsed, question)
        if invented:
            fallback = [] if targets else noun_phrases(question, self.config.targets)
            names = ", ".join(repr(t.phrase) for t in invented)
            notes.append(
                ResultWarning(
                    code="target_not_in_question",
                    message=f"the model named {names}, which the question does not mention; "
                    + (
                        "it was dropped"
                        if targets
                        else "the question's own noun phrases were used instead: "
                        + (", ".join(repr(t.phrase) for t in fallback) or "none")
                    ),
                )
            )
            targets = targets or fallback
        elif not parsed:
            targets = noun_phrases(question, self.config.targets)
            if targets:
                notes.append(
                    ResultWarning(
                        code="target_not_in_question",
                        message="the model named no object; the question's own noun phrases were used: "
                        + ", ".join(repr(t.phrase) for t in targets),
                    )
                )
        return targets

    def _layers(self) -> tuple[int, int]:
        n = self.adapter.num_layers
        lo, hi = self.config.relevance.layers or (n // 2, n)
        return max(0, lo), min(hi, n)

    def _search(self, img: Image.Image, target: Target, timings: dict[str, float]) -> _TargetOutcome:
        cfg = self.config
        t0 = time.perf_counter()
        prompt = existence_prompt(target.phrase)
        feature = cfg.relevance.feature
        with self.adapter.counter.in_phase("search"):
            pre = self.adapter.prefill(img, prompt, target.phrase, keys_norope=feature == "key_norope")
        lo, hi = self._layers()
        if feature == "key_norope":
            if pre.layer_keys_norope is None:
                raise ConfigError(f"relevance.feature='key_norope': {type(self.adapter).__name__} has no pre-RoPE keys")
            feats = pre.layer_keys_norope[lo:hi]
        else:
            feats = pre.layer_values[lo:hi]
        vec = relevance_map(feats, pre.target_positions, pre.visual_positions, cfg.relevance)  # (P,)
        grid_map, grid = to_grid(vec, pre.grid, cfg.relevance)  # (rows, cols)
        timings["relevance"] = timings.get("relevance", 0.0) + time.perf_counter() - t0

        t1 = time.perf_counter()
        cands = Regions.from_proposals(propose_regions(grid_map, cfg.proposal), grid, img.size, cfg.rank.min_crop_px)
        timings["proposals"] = timings.get("proposals", 0.0) + time.perf_counter() - t1

        t2 = time.perf_counter()
        ex_prompt = prompt + (" " + cfg.rank.existence_suffix if cfg.rank.existence_suffix else "")

        def score(indices: Sequence[int]) -> np.ndarray:
            crops = [crop(img, cands.boxes[i]) for i in indices]
            with self.adapter.counter.in_phase("search"):
                return self.adapter.yes_no_margins(crops, [ex_prompt] * len(crops)).numpy().astype(np.float64)

        anchor_scores = [float(v) for v in cands.anchor_scores]
        if target.all_instances:
            ranking = rank_type2(len(cands), score, cfg.rank)
        elif cfg.rank.mode == "adaptive":
            ranking = rank_adaptive(len(cands), score, anchor_scores, cfg.rank)
        else:
            ranking = rank_type1(len(cands), score, cfg.rank)
        timings["ranking"] = timings.get("ranking", 0.0) + time.perf_counter() - t2

        status, warnings, selected_idx = target_status(
            target, ranking, anchor_scores, cfg, boxes_cells=grid.image_xyxy_to_cells(cands.boxes), relevance=grid_map
        )
        regions = cands.ranked(grid, ranking.confidence, selected_idx, target.phrase)
        selected = cands.boxes[list(selected_idx)] if selected_idx else np.zeros((0, 4))
        selected_conf = np.array([ranking.confidence.get(i, np.nan) for i in selected_idx], dtype=np.float64)
        map_out = RelevanceMapOut(
            target=target.phrase,
            rows=grid.rows,
            cols=grid.cols,
            values=np.round(grid_map, 6).tolist(),
            view_xyxy=grid.view_xyxy,
        )
        full_conf = float(1 / (1 + np.exp(-pre.yes_no_margin)))
        return _TargetOutcome(target, regions, selected, selected_conf, map_out, full_conf, status, warnings)

    def _logit(self, options: Sequence[str] | None) -> bool:
        return self.config.answer.scheme == "logit" and bool(options)

    def _best_option(
        self, images: Sequence[Image.Image], question: str, options: Sequence[str] | None
    ) -> tuple[str, AnswerEvidence]:
        """Logit matching: the option with the highest mean log-probability as the reply to the bare question,
        with every option's probability (the softmax of those scores).
        """
        opts = list(options or [])
        scores = self.adapter.option_log_likelihoods(
            images, question, opts, shared_prefix=self.config.answer.shared_prefix
        )  # (K,)
        best = int(scores.argmax())
        return opts[best], option_evidence(opts, scores.double().numpy(), self.config.answer.low_confidence)

    def _answer_on(
        self, images: Sequence[Image.Image], question: str, options: Sequence[str] | None
    ) -> tuple[str, AnswerEvidence | None]:
        """The answer on one image (or images in order, before the question) and its evidence."""
        if self._logit(options):
            return self._best_option(images, question, options)
        text, max_new = self._answer_text(question, options), self.config.answer.max_new_tokens
        if len(images) == 1:
            reply = self.adapter.generate(images[0], text, max_new_tokens=max_new)
        else:
            reply = self.adapter.generate_interleaved([*images, text], max_new_tokens=max_new)
        return reply, self._reply_evidence(reply, options)

    def _reply_evidence(self, reply: str, options: Sequence[str] | None) -> AnswerEvidence | None:
        ids = self.adapter.reply_token_ids(LETTERS[: len(options)]) if options else None
        return reply_evidence(reply, options, ids, self.config.answer.low_confidence)

    def _answer_text(self, question: str, options: Sequence[str] | None) -> str:
        if self._logit(options):
            return question
        if options:
            return format_options(question, list(options), self.config.answer.answer_suffix)
        return question

    def _answer(
        self,
        img: Image.Image,
        question: str | None,
        options: Sequence[str] | None,
        targets: list[Target],
        outcomes: list[_TargetOutcome],
        timings: dict[str, float],
        notes: list[ResultWarning],
        *,
        run_answer: bool = True,
    ) -> FocusResult:
        t0 = time.perf_counter()
        type2 = any(t.all_instances for t in targets)
        if type2:
            per_target = [o.selected_boxes for o in outcomes]
            per_conf = [o.selected_conf for o in outcomes]
        else:
            per_target = [o.selected_boxes[0] for o in outcomes if len(o.selected_boxes)]
            per_conf = [o.selected_conf[:1] for o in outcomes if len(o.selected_boxes)]
        text = self._answer_text(question, options) if question is not None and run_answer else None
        max_new = self.config.answer.max_new_tokens
        answer: str | None = None
        evidence: AnswerEvidence | None = None
        mode: Literal["full", "crop", "union", "canvas", "multi"]
        if self.adapter.answer_mode == "multi" and sum(len(np.atleast_2d(b)) for b in per_target) > 0:
            # global-local / native models: outlined context image + one crop per ROI in one prompt (docs/method.md,
            # Stage VI)
            views = focus_views(
                img,
                np.concatenate([np.atleast_2d(b) for b in per_target]),
                np.concatenate(per_conf),
                self.config.answer,
            )
            mode, used_boxes = "multi", views.boxes_xyxy
            if text is not None and question is not None:
                with self.adapter.counter.in_phase("answer"):
                    if self._logit(options):
                        images = [p for p in views.parts if isinstance(p, Image.Image)]
                        answer, evidence = self._best_option(images, question, options)
                    else:
                        answer = self.adapter.generate_interleaved([*views.parts, text], max_new_tokens=max_new)
                        evidence = self._reply_evidence(answer, options)
        else:  # global-view models, or nothing found: one image (crop / union / canvas / full)
            view = answer_view(img, per_target, type2=type2, cfg=self.config.answer)
            mode, used_boxes = view.mode, view.boxes_xyxy
            if text is not None and question is not None:
                with self.adapter.counter.in_phase("answer"):
                    answer, evidence = self._answer_on([view.image], question, options)
        timings["answer"] = time.perf_counter() - t0
        regions: list[Region] = []
        for o in outcomes:
            regions.extend(o.regions)
        regions = [r.model_copy(update={"id": f"r{i + 1}"}) for i, r in enumerate(regions)]
        grid = self.adapter.grid_for(img.size)
        shown = question is not None and len(used_boxes) > 0  # a target search has no answer view
        answer_boxes = [tuple(int(v) for v in b) for b in grid.to_int_xyxy(used_boxes)] if shown else []
        warnings = [*notes, *(w for o in outcomes for w in o.warnings)]
        state: QuestionState = "not_asked"
        if answer is not None:
            state = "answered_on_region" if mode != "full" else "answered_on_whole_image"
        if mode in ("full", "none") and outcomes:
            proposed = any(o.regions for o in outcomes)
            warnings.append(
                ResultWarning(
                    code="nothing_found",
                    message=("no region passed the existence check; " if proposed else "no region was proposed; ")
                    + ("the answer was made on the whole image" if answer is not None else "no region is selected"),
                )
            )
        warnings += confidence_warnings(evidence)
        status = ResultStatus(question=state, targets=[o.status for o in outcomes], warnings=warnings)
        return self._result(
            img,
            question=question,
            answer=answer,
            answer_evidence=evidence,
            targets=[t.phrase for t in targets],
            target_types=["all" if t.all_instances else "single" for t in targets],
            regions=regions,
            answer_view=mode if question is not None else "none",
            answer_boxes=answer_boxes,
            relevance_maps=[o.map_out for o in outcomes],
            full_image_confidence={o.target.phrase: round(o.full_conf, 6) for o in outcomes},
            timings_s=timings,
            status=status,
        )

    def _result(self, img: Image.Image, *, method: str = "focus", **fields: Any) -> FocusResult:
        """:meth:`FocusResult.from_run` for this adapter's model and counter on ``img``."""
        return FocusResult.from_run(
            method=method, model_id=self.adapter.model_id, image_wh=img.size, counter=self.adapter.counter, **fields
        )
