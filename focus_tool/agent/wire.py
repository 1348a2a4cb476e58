"""The agent surfaces' wire types: :class:`AgentResult` (a result plus :class:`SessionInfo`), the
:class:`ZoomOutcome` a surface formats, and :func:`summary_json`, the compact text an LLM reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from focus_tool.result import FocusResult, Region


class SessionInfo(BaseModel):
    """How a result relates to earlier calls on the same image (same bytes)."""

    image_sha256: str = Field(description="SHA-256 of the image bytes; the session-cache key")
    cache_hit: bool = Field(description="an identical earlier request's result was returned without running the model")
    reuse: Literal["none", "result", "encoded_image"] = Field(
        description="'result': the whole earlier result was reused (no model run); 'encoded_image': the model ran "
        "but reused the image's KV prefix from an earlier call; 'none': everything was computed"
    )
    forward_passes_saved: int = Field(ge=0, description="model passes not run thanks to the result cache")
    prefill_tokens_saved: int = Field(
        default=0, ge=0, description="prompt tokens (the image's) not recomputed thanks to the encoded-image cache"
    )
    parent_region_id: str | None = Field(
        default=None, description="the region_id zoomed into (one returned to this caller earlier), if any"
    )
    parent_box: tuple[int, int, int, int] | None = Field(
        default=None, description="[x0, y0, x1, y1] of the crop the model saw, original-image pixels"
    )
    known_region_ids: list[str] = Field(
        default_factory=list,
        description="region ids this caller may pass as region_id in a follow-up call on this image (ids are "
        "'<token>-r<n>', fresh for every result and honoured only for the caller they were returned to; the most "
        "recent ones, oldest first)",
    )


class AgentResult(FocusResult):
    """A :class:`FocusResult` plus its session information; boxes are original-image pixels."""

    session: SessionInfo


@dataclass(frozen=True)
class ZoomOutcome:
    """What a surface formats: the result, the image size and the JPEG crops of the top regions.

    The decoded image is not kept: it lives only inside the service's queue slot (one decoded image at a time).
    ``view_jpeg`` is the whole image downscaled for a result view (:func:`focus_tool.view.view_jpeg`), cut only when
    the caller asked for it (``FocusService.zoom(view_max_side=...)``), else None.
    """

    result: AgentResult
    image_wh: tuple[int, int]
    top_regions: list[Region]
    crops_jpeg: list[bytes]
    view_jpeg: bytes | None = None


def summary_json(outcome: ZoomOutcome) -> str:
    """Compact JSON an LLM can read without the images: answer, top regions, coordinates note, cache figures."""
    r = outcome.result
    fp = r.forward_passes
    summary = {
        "question": r.question,
        "answer": r.answer,
        "answer_confidence": None if r.answer_evidence is None else round(r.answer_evidence.confidence, 4),
        "option_probabilities": None
        if r.answer_evidence is None or not r.answer_evidence.options
        else {o: round(p, 4) for o, p in r.answer_evidence.options.items()},
        "targets": r.targets,
        "image_size": list(r.image_wh),
        "regions": [
            {
                "id": g.id,
                "box": list(g.box),
                "confidence": None if g.confidence is None else round(g.confidence, 4),
                "target": g.target,
                "used_for_answer": g.selected,
            }
            for g in outcome.top_regions
        ],
        "regions_total": len(r.regions),
        "answer_view": r.answer_view,
        "status": None if r.status is None else r.status.question,
        "targets_status": []
        if r.status is None
        else [
            {
                "target": t.target,
                "state": t.state,
                "confidence": None if t.confidence is None else round(t.confidence, 4),
            }
            for t in r.status.targets
        ],
        "warnings": [] if r.status is None else [f"{w.code}: {w.message}" for w in r.status.warnings],
        "forward_passes": {"search": fp.search, "answer": fp.answer, "extraction": fp.extraction},
        "seconds": round(sum(v for k, v in r.timings_s.items() if k != "queue"), 3),
        "session": {
            "cache_hit": r.session.cache_hit,
            "reuse": r.session.reuse,
            "forward_passes_saved": r.session.forward_passes_saved,
            "prefill_tokens_saved": r.session.prefill_tokens_saved,
            "zoomed_into": r.session.parent_region_id,
        },
        "note": "boxes are [x0, y0, x1, y1] in original-image pixels; a region's confidence is P(object present) "
        "in 0-1; answer_confidence is the model's probability of its answer (a low_confidence warning marks a guess); "
        "status: answered_on_region, answered_on_whole_image (nothing found) or not_asked; "
        "a target state of not_found means no region is selected; ambiguous means several distinct objects match; "
        "to zoom inside a region, call again with the same image and region_id set to its id",
    }
    return json.dumps(summary, separators=(",", ":"))
