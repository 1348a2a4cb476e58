"""Settings of the six FOCUS steps: small frozen dataclasses grouped by step, composed in :class:`FocusConfig`.

Defaults follow docs/method.md: paper values are marked [paper], our choices for what the paper leaves open are marked
[inferred] with their number in docs/method.md's "Open points of the paper, numbered" (``#12``). Per-backbone values
live in ``focus_tool.presets``. Variants are data:
``dataclasses.replace(cfg, proposal=replace(cfg.proposal, s_max=7))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from focus_tool.errors import ConfigError
from focus_tool.prompts import LETTER_INSTRUCTION

PIPELINES: tuple[str, ...] = ("preset", "paper", "lean")
"""Pipeline variants (``--pipeline``, :func:`focus_tool.presets.pipeline_variant`): the checkpoint's preset as it is,
the paper's pipeline, or lean FOCUS."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class TargetConfig:
    """Stage I: target extraction (paper §3.2, §3.3; docs/method.md, Stage I)."""

    extract_prompt: str = ""  # "" = focus_tool.steps.targets.DEFAULT_EXTRACT_PROMPT  [inferred, #1]
    max_new_tokens: int = 48  # greedy, text-only call  [inferred]
    max_targets: int = 4  # keep at most this many targets  [inferred]
    type2_rule: Literal["all_or_keyword", "all_only"] = "all_or_keyword"  # [inferred, #2]
    type2_regex: str = r"\bhow many\b|\bcount\b|\bnumber of\b"

    def __post_init__(self) -> None:
        _check(self.max_targets >= 1, f"max_targets must be >= 1, got {self.max_targets}")
        if not self.extract_prompt:
            from focus_tool.steps.targets import DEFAULT_EXTRACT_PROMPT

            object.__setattr__(self, "extract_prompt", DEFAULT_EXTRACT_PROMPT)
        _check("{question}" in self.extract_prompt, "extract_prompt must contain '{question}'")


@dataclass(frozen=True, kw_only=True)
class RelevanceConfig:
    """Stages II-III: the V-V relevance map (paper §3.2, App. A.5 Fig. 7; docs/method.md, Stages II and III)."""

    layers: tuple[int, int] | None = None  # [l, L) 0-based half-open; None = [O//2, O)  [paper Tab. 7 / inferred]
    feature: Literal["value", "key_norope"] = "value"  # K-K is the ablation  [inferred, #28]
    layer_agg: Literal["sum", "product"] = "sum"  # Fig. 7 sums per-layer rows  [paper Fig. 7, #5]
    rollout_norm: Literal["row", "column"] = "row"  # [inferred, #4]
    negative_handling: Literal["clamp", "minmax", "none"] = "clamp"  # [inferred, #6]
    clamp_similarity: bool = False  # max(S, 0) before the residual + row norm; off = Fig. 7 exactly  [inferred]
    map_source: Literal["vv", "random"] = "vv"  # "random" is the ablation  [inferred, #27]
    smooth_sigma: float = 0.0  # Gaussian sigma in cells; global-local presets use 1.0  [inferred, #9]
    downsample: int = 1  # average pooling factor; global-local presets use 2  [inferred, #9]
    mask_padding: bool = True  # zero cells wholly inside the pad band  [inferred, #11]
    seed: int = 0  # for map_source="random"

    def __post_init__(self) -> None:
        if self.layers is not None:
            lo, hi = self.layers
            _check(0 <= lo < hi, f"layers must be [l, L) with 0 <= l < L, got {self.layers}")
        _check(self.downsample >= 1, f"downsample must be >= 1, got {self.downsample}")
        _check(self.smooth_sigma >= 0, f"smooth_sigma must be >= 0, got {self.smooth_sigma}")


@dataclass(frozen=True, kw_only=True)
class ProposalConfig:
    """Stage IV: anchors, growing square boxes, NMS (paper §3.3, App. A.5; docs/method.md, Stage IV)."""

    k: int = 30  # anchors before the distance filter  [paper Tab. 7]
    s_min: int = 3  # initial ROI side in cells  [paper Tab. 7]
    s_max: int = 5  # maximum ROI side in cells  [paper Tab. 7, LLaVA-1.5]
    s_dist: float = 2.0  # minimum anchor distance in cells  [paper Tab. 7, V*]
    expand_thr: float = 0.5  # growth continues while the box mean of (map / map mean) >= this  [paper Tab. 12b]
    expand_mode: Literal["map_mean", "anchor_ratio"] = "map_mean"  # [inferred, #12]
    nms_iou: float = 0.3  # [paper Tab. 12e]

    def __post_init__(self) -> None:
        _check(self.k >= 1, f"k must be >= 1, got {self.k}")
        _check(self.s_min >= 1 and self.s_min % 2 == 1, f"s_min must be a positive odd number, got {self.s_min}")
        _check(self.s_max >= self.s_min and self.s_max % 2 == 1, f"s_max must be odd and >= s_min, got {self.s_max}")
        _check(0.0 < self.nms_iou <= 1.0, f"nms_iou must be in (0, 1], got {self.nms_iou}")
        _check(self.s_dist >= 0, f"s_dist must be >= 0, got {self.s_dist}")


@dataclass(frozen=True, kw_only=True)
class RankConfig:
    """Stage V: existence confidence c_Yes per ROI crop (paper §3.3, App. A.5, App. C.1; docs/method.md, Stage V)."""

    # "paper": score the first n_steps ROIs (+ overrun), App. C.1. "adaptive" (ours, docs/method.md "Adaptive
    # ranking"): score the first ROI alone and accept it when its c_Yes >= accept_conf and the map is neither
    # ambiguous (second anchor >= ambiguity_ratio x the first) nor flat (first anchor < flat_peak x the map mean);
    # otherwise continue exactly as "paper" (the first ROI's score is kept)  [choice]
    mode: Literal["paper", "adaptive"] = "paper"
    # "found" when the best region's c_Yes >= found_conf (the Yes side of the Yes/No softmax); below it the target
    # is reported not found and, under answer.on_not_found="full_image", no region is selected  [choice]
    found_conf: float = 0.5
    # ambiguity counts distinct objects: two ROIs above found_conf are one object when their boxes overlap or touch
    # and the relevance map between their centres stays >= object_dip x the lower end (a dip to the background
    # separates two cards); 0 = touching boxes alone decide (steps/status.py)  [choice]
    object_dip: float = 0.5
    accept_conf: float = 0.9
    ambiguity_ratio: float = 0.5
    flat_peak: float = 2.0
    n_steps: int = 4  # ROIs scored per type-1 target; the tool default  [inferred, #30]
    overrun: bool = True  # keep scoring while every answer is No  [paper App. C.1]
    max_overrun: int | None = None  # cap on extra ROIs  [inferred, #16]
    rank_batch_size: int = 8  # crops per batched forward  [inferred, #17]
    t_type2: float = 0.6  # c_Yes threshold for type-2 targets  [paper Tab. 7, LLaVA-1.5]
    conf_scale: Literal["softmax", "zoomeye"] = "softmax"  # [inferred, #13]
    existence_suffix: str = ""  # appended to the existence prompt  [inferred, #15]
    min_crop_px: int = 0  # grow smaller crops about their centre; 0 = off  [inferred]

    def __post_init__(self) -> None:
        _check(self.n_steps >= 1, f"n_steps must be >= 1, got {self.n_steps}")
        _check(self.rank_batch_size >= 1, f"rank_batch_size must be >= 1, got {self.rank_batch_size}")
        _check(0.0 <= self.t_type2 <= 1.0, f"t_type2 must be in [0, 1], got {self.t_type2}")
        _check(0.0 <= self.found_conf <= 1.0, f"found_conf must be in [0, 1], got {self.found_conf}")
        _check(0.0 <= self.object_dip <= 1.0, f"object_dip must be in [0, 1], got {self.object_dip}")
        _check(0.0 <= self.accept_conf <= 1.0, f"accept_conf must be in [0, 1], got {self.accept_conf}")
        _check(self.ambiguity_ratio > 0, f"ambiguity_ratio must be > 0, got {self.ambiguity_ratio}")
        _check(self.flat_peak >= 0, f"flat_peak must be >= 0, got {self.flat_peak}")


@dataclass(frozen=True, kw_only=True)
class AnswerConfig:
    """Stage VI: answer on the selected region(s) (paper §3.3, App. A.5; docs/method.md, Stage VI)."""

    t_obj_dist: float = 1200.0  # px between ROI centres that switches a union to a canvas  [paper Tab. 7]
    canvas_cell: int = 336  # px per canvas cell  [inferred, #20]
    max_crops: int = 6  # type-2 regions kept; multi-image answers: crops passed, highest c_Yes first  [inferred]
    # multi-image answers (answer_mode "multi"): the first image is the full image with the ROIs outlined (paper
    # §3.3 "global view") or, as drawn in App. D Fig. 10 (II), the union region of the ROIs  [inferred, #22]
    context_image: Literal["full", "union"] = "full"
    max_new_tokens: int = 16
    answer_suffix: str = LETTER_INSTRUCTION  # [paper App. C.5]
    # a target whose best region is below rank.found_conf: "full_image" = select nothing and answer on the whole
    # image (status says so); "best_region" = answer on the best region anyway, as the paper does (App. C.1: the
    # argmax after overrun), with a warning  [inferred, #23]
    on_not_found: Literal["full_image", "best_region"] = "full_image"
    # how the final answer is read (V*Bench's two schemes, paper App. C.5; docs/evaluation.md, --scheme): "letter" =
    # options shown as (A) (B) ... and the reply generated; "logit" = each option written as the assistant's reply
    # after the bare question, the highest mean log-probability wins (SEAL / ZoomEye logit matching; one pass per
    # option)  [choice]
    scheme: Literal["letter", "logit"] = "letter"
    # logit scheme: prefill the answer prompt once and score the K options as continuations of its cache (1 pass
    # instead of K; same scores within float error, tests/test_option_prefix.py)  [choice; SEAL's own way]
    shared_prefix: bool = False
    # the answer confidence (AnswerEvidence.confidence) below which a result carries a low_confidence warning; chosen
    # per checkpoint on the validation stream (docs/method.md, "Answer evidence"); 0 = never (not chosen: no
    # real checkpoint has been run)  [choice]
    low_confidence: float = 0.0

    def __post_init__(self) -> None:
        _check(self.canvas_cell >= 16, f"canvas_cell must be >= 16, got {self.canvas_cell}")
        _check(self.max_crops >= 1, f"max_crops must be >= 1, got {self.max_crops}")
        _check(0.0 <= self.low_confidence <= 1.0, f"low_confidence must be in [0, 1], got {self.low_confidence}")


@dataclass(frozen=True, kw_only=True)
class FocusConfig:
    """All FOCUS settings, one group per step."""

    targets: TargetConfig = field(default_factory=TargetConfig)
    relevance: RelevanceConfig = field(default_factory=RelevanceConfig)
    proposal: ProposalConfig = field(default_factory=ProposalConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)
