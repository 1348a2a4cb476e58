"""The one result type every engine returns and every surface serialises (pydantic v2, JSON round-trip)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from focus_tool.adapters.base import ForwardCounter

SCHEMA_VERSION = "1"


class Region(BaseModel):
    """A ranked region, integer xyxy in original-image pixels (after EXIF transpose)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="stable id of this region within the result, e.g. 'r1'")
    box: tuple[int, int, int, int] = Field(description="[x0, y0, x1, y1] in original-image pixels")
    confidence: float | None = Field(ge=0.0, le=1.0, description="existence confidence P(Yes); None if not scored")
    target: str = Field(description="the target phrase the region was proposed for")
    rank: int = Field(ge=1, description="1 = best region for its target")
    anchor_score: float = Field(description="relevance at the anchor, relative to the map mean")
    selected: bool = Field(default=False, description="used for the answer")

    @field_validator("box")
    @classmethod
    def _box_ok(cls, v: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        if v[2] <= v[0] or v[3] <= v[1]:
            raise ValueError(f"box must have x1 > x0 and y1 > y0, got {v}")
        return v


class RelevanceMapOut(BaseModel):
    """A target's relevance map on its token grid, with the image rectangle the grid spans."""

    model_config = ConfigDict(frozen=True)

    target: str
    rows: int = Field(ge=1)
    cols: int = Field(ge=1)
    values: list[list[float]] = Field(description="rows x cols, non-negative, summing to 1")
    view_xyxy: tuple[float, float, float, float] = Field(description="image-pixel rectangle covered by the grid")


# results written before the target-extraction phase was named ``extraction`` call it ``aux``: both are read,
# ``extraction`` is written
_EXTRACTION = AliasChoices("extraction", "aux")


class PhaseCounts(BaseModel):
    """One count per phase."""

    search: int = Field(default=0, ge=0)
    answer: int = Field(default=0, ge=0)
    extraction: int = Field(default=0, ge=0, validation_alias=_EXTRACTION)


class ForwardPasses(BaseModel):
    """Model work, counted at the model-call boundary (a generate call counts once).

    ``search`` / ``answer`` / ``extraction`` are sequences run from an empty cache (the paper's forward passes);
    ``tokens`` the prompt tokens actually computed per phase (a prefill that reused the encoded image counts its
    suffix, a continuation of a cached prefix only its own tokens); ``images`` the images run through the vision
    tower; ``continuations`` the rows scored as continuations of a cached prefix (answer options on one prefill),
    which are not passes. Results written before the rename spell ``extraction`` as ``aux``; both are read.
    """

    search: int = Field(ge=0, description="relevance prefills + existence checks (the paper's search FPs)")
    answer: int = Field(ge=0, description="final answer passes")
    extraction: int = Field(ge=0, validation_alias=_EXTRACTION, description="target extraction")
    tokens: PhaseCounts = Field(default_factory=PhaseCounts, description="prompt tokens computed per phase")
    images: PhaseCounts = Field(default_factory=PhaseCounts, description="images encoded per phase")
    continuations: PhaseCounts = Field(
        default_factory=PhaseCounts, description="rows scored on a cached prefix per phase (not passes)"
    )

    @classmethod
    def from_counter(cls, counter: Any) -> ForwardPasses:
        """The counts of a :class:`~focus_tool.adapters.base.ForwardCounter`."""
        c = counter.counts
        return cls(
            search=c["search"],
            answer=c["answer"],
            extraction=c["extraction"],
            tokens=PhaseCounts(**counter.tokens),
            images=PhaseCounts(**counter.images),
            continuations=PhaseCounts(**counter.continuations),
        )


AnswerView = Literal["full", "crop", "union", "canvas", "multi", "none"]
TargetType = Literal["single", "all"]
Box = tuple[int, int, int, int]
TargetState = Literal["found", "not_found", "ambiguous", "unverified"]
QuestionState = Literal["answered_on_region", "answered_on_whole_image", "not_asked"]
WarningCode = Literal[
    "target_not_in_question",
    "no_target_in_question",
    "flat_map",
    "all_crops_no",
    "ambiguous",
    "nothing_found",
    "answered_below_threshold",
    "low_confidence",
]


class AnswerEvidence(BaseModel):
    """How sure the model was of its answer, read from the pass that made it (no extra pass).

    Option answers: ``options`` holds every option's probability and ``confidence`` the chosen option's; under the
    logit scheme the softmax of the mean log-probabilities the scheme ranks them by (the chosen option is the most
    probable one), under the letter scheme the letters' probabilities at the first reply position, renormalised.
    Free answers (generated text without options): ``mean_logprob`` is the mean log-probability of the generated
    tokens and ``confidence`` its exponential (the geometric mean token probability). ``low`` is
    ``confidence < threshold``, the preset's ``answer.low_confidence``.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["options", "free"] = Field(description="options: scored options; free: a generated reply")
    confidence: float = Field(ge=0.0, le=1.0, description="P(chosen option), or exp(mean token log-probability)")
    options: dict[str, float] = Field(
        default_factory=dict, description="option -> probability (sums to 1); empty for a free answer"
    )
    mean_logprob: float | None = Field(default=None, le=0.0, description="mean token log-probability (free answers)")
    threshold: float = Field(ge=0.0, le=1.0, description="below it the result carries a low_confidence warning")
    low: bool = Field(description="confidence < threshold")

    def line(self) -> str:
        """One line for people: the confidence, the options' probabilities (best first) or the mean log-probability."""
        if self.kind == "options":
            ranked = sorted(self.options.items(), key=lambda kv: -kv[1])
            detail = "options: " + ", ".join(f"{o} {p:.2f}" for o, p in ranked)
        else:
            detail = f"mean token log-probability {self.mean_logprob:.3f}"
        flag = f"; LOW (< {self.threshold})" if self.low else ""
        return f"confidence {self.confidence:.2f} ({detail}){flag}"


class TargetStatus(BaseModel):
    """Whether one target was found: its best region's P(Yes) against the preset's ``rank.found_conf``."""

    model_config = ConfigDict(frozen=True)

    target: str
    state: TargetState = Field(
        description="found: the best region's P(Yes) >= the threshold; not_found: below it (no region selected); "
        "ambiguous: more than one distinct object of a single-instance target above it; unverified: no existence check "
        "ran (ranking switched off)"
    )
    confidence: float | None = Field(ge=0.0, le=1.0, description="P(Yes) of the best region; None if unverified")
    threshold: float = Field(ge=0.0, le=1.0, description="the P(Yes) threshold of 'found'")
    regions_above: int = Field(
        ge=0, description="distinct objects among the regions with P(Yes) >= threshold (overlapping crops count once)"
    )


class ResultWarning(BaseModel):
    """Something a caller should know before trusting the result."""

    model_config = ConfigDict(frozen=True)

    code: WarningCode
    message: str
    target: str | None = None


class ResultStatus(BaseModel):
    """What an agent can branch on: per target found / not found / ambiguous, and how the question was answered."""

    question: QuestionState = Field(
        description="answered_on_region: the answer was made on the selected region(s); answered_on_whole_image: "
        "nothing was found, so the answer is the whole-image answer; not_asked: no question, or answer=False"
    )
    targets: list[TargetStatus] = Field(default_factory=list)
    warnings: list[ResultWarning] = Field(default_factory=list)


class FocusResult(BaseModel):
    """What a zoom call returns."""

    schema_version: str = SCHEMA_VERSION
    method: str = Field(default="focus", description="the engine: a registered method name (focus_tool.methods)")
    model_id: str
    image_wh: tuple[int, int]
    question: str | None = None
    answer: str | None = None
    answer_evidence: AnswerEvidence | None = Field(
        default=None, description="the answer's confidence (and every option's probability); None without an answer"
    )
    targets: list[str] = Field(default_factory=list)
    target_types: list[TargetType] = Field(default_factory=list)
    regions: list[Region] = Field(default_factory=list)
    answer_view: AnswerView = Field(
        default="none",
        description="the answer input: one image (full / crop / union / canvas), or 'multi' = the outlined context "
        "image followed by one crop per answer box (global-local and native models)",
    )
    answer_boxes: list[Box] = Field(default_factory=list)
    relevance_maps: list[RelevanceMapOut] = Field(default_factory=list)
    full_image_confidence: dict[str, float] = Field(default_factory=dict, description="P(Yes) on the whole image")
    forward_passes: ForwardPasses
    prefill_tokens: int = Field(ge=0)
    image_cache_hits: int = Field(
        default=0, ge=0, description="relevance prefills that reused the encoded image (KV prefix) of an earlier call"
    )
    prefill_tokens_reused: int = Field(
        default=0, ge=0, description="prompt tokens of those prefills served from the cache instead of recomputed"
    )
    timings_s: dict[str, float] = Field(default_factory=dict)
    status: ResultStatus | None = Field(default=None, description="found / not found per target, answer basis")

    @field_validator("method")
    @classmethod
    def _method_registered(cls, v: str) -> str:
        from focus_tool.methods import method_names

        names = method_names()
        if v not in names:
            raise ValueError(f"unknown method {v!r}; registered methods: {', '.join(names)}")
        return v

    @classmethod
    def from_run(
        cls,
        *,
        method: str,
        model_id: str,
        image_wh: tuple[int, int],
        counter: ForwardCounter,
        timings_s: Mapping[str, float] | None = None,
        question: str | None = None,
        answer: str | None = None,
        answer_evidence: AnswerEvidence | None = None,
        targets: Sequence[str] = (),
        target_types: Sequence[TargetType] = (),
        regions: Sequence[Region] = (),
        answer_view: AnswerView = "none",
        answer_boxes: Sequence[Box] = (),
        relevance_maps: Sequence[RelevanceMapOut] = (),
        full_image_confidence: Mapping[str, float] | None = None,
        status: ResultStatus | None = None,
    ) -> FocusResult:
        """The result of one run, its model-work figures read from the run's counter.

        ``forward_passes`` (:meth:`ForwardPasses.from_counter`), ``prefill_tokens`` and the encoded-image cache
        figures (``image_cache_hits``, ``prefill_tokens_reused``) come from ``counter``; timings are rounded to
        0.1 ms.

        Args:
            method: a registered method name (:func:`focus_tool.methods.method_names`).
            model_id: the adapter's model id.
            image_wh: the original image size (after EXIF transpose).
            counter: the adapter's :class:`~focus_tool.adapters.base.ForwardCounter`, reset at the run's start.
            timings_s: seconds per step.
            question: the question (None for a target-only search).
            answer: the answer (None when none was made).
            answer_evidence: the answer's confidence and option probabilities.
            targets: the target phrases searched.
            target_types: "single" / "all" per target.
            regions: the ranked regions, ids set.
            answer_view: the answer input, see :attr:`answer_view`.
            answer_boxes: the boxes the answer view was made from, integer image px.
            relevance_maps: one map per target.
            full_image_confidence: P(Yes) on the whole image per target.
            status: found / not found per target and the answer basis.

        Returns:
            The validated result.
        """
        return cls(
            method=method,
            model_id=model_id,
            image_wh=image_wh,
            question=question,
            answer=answer,
            answer_evidence=answer_evidence,
            targets=list(targets),
            target_types=list(target_types),
            regions=list(regions),
            answer_view=answer_view,
            answer_boxes=list(answer_boxes),
            relevance_maps=list(relevance_maps),
            full_image_confidence=dict(full_image_confidence or {}),
            forward_passes=ForwardPasses.from_counter(counter),
            prefill_tokens=counter.prefill_tokens,
            image_cache_hits=counter.image_cache_hits,
            prefill_tokens_reused=counter.reused_tokens,
            timings_s={k: round(v, 4) for k, v in (timings_s or {}).items()},
            status=status,
        )
