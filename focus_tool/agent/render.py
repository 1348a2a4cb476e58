"""What the agent surfaces render from a result: the top regions, their JPEG crops, and a crop's result mapped
back to the original image.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image

from focus_tool.agent.policy import AgentPolicy
from focus_tool.grid import PatchGrid
from focus_tool.result import FocusResult, Region, RelevanceMapOut

logger = logging.getLogger(__name__)


def top_regions(result: FocusResult, n: int) -> list[Region]:
    """The ``n`` best regions: those used for the answer first, then by confidence, then by rank."""
    ordered = sorted(
        result.regions,
        key=lambda r: (not r.selected, -(r.confidence if r.confidence is not None else -1.0), r.rank, r.id),
    )
    return ordered[:n]


def crop_jpegs(image: Image.Image, regions: Sequence[Region], policy: AgentPolicy) -> list[bytes]:
    """One JPEG per region, long side at most ``max_output_side_px``, total bytes at most ``max_output_bytes``."""
    out: list[bytes] = []
    total = 0
    for region in regions:
        piece = image.crop(region.box)
        scale = policy.max_output_side_px / max(piece.size)
        if scale < 1.0:
            size = (max(1, round(piece.width * scale)), max(1, round(piece.height * scale)))
            piece = piece.resize(size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        piece.save(buf, format="JPEG", quality=policy.jpeg_quality)
        data = buf.getvalue()
        if total + len(data) > policy.max_output_bytes:
            logger.info("dropping crops after %d: output byte cap %d reached", len(out), policy.max_output_bytes)
            break
        out.append(data)
        total += len(data)
    return out


def shift_result(result: FocusResult, *, origin_xy: tuple[int, int], image_wh: tuple[int, int]) -> FocusResult:
    """Map a result computed on a crop back to the original image (boxes, maps); region ids stay the result's own.

    Args:
        result: the pipeline's result on the crop (boxes in crop pixels).
        origin_xy: the crop's top-left corner in original-image pixels.
        image_wh: (W, H) of the original image.
    """

    def to_image(box: Sequence[float]) -> tuple[int, int, int, int]:
        xyxy = PatchGrid.crop_to_image_xyxy(np.asarray(box, dtype=np.float64), origin_xy)[0]  # (4,)
        return (int(xyxy[0]), int(xyxy[1]), int(xyxy[2]), int(xyxy[3]))

    regions = [r.model_copy(update={"box": to_image(r.box)}) for r in result.regions]
    maps = [
        RelevanceMapOut(
            target=m.target,
            rows=m.rows,
            cols=m.cols,
            values=m.values,
            view_xyxy=tuple(float(v) for v in PatchGrid.crop_to_image_xyxy(np.asarray(m.view_xyxy), origin_xy)[0]),  # type: ignore[arg-type]
        )
        for m in result.relevance_maps
    ]
    return result.model_copy(
        update={
            "image_wh": image_wh,
            "regions": regions,
            "relevance_maps": maps,
            "answer_boxes": [to_image(b) for b in result.answer_boxes],
        }
    )


# ---------------------------------------------------------------------------------------------------- cache + gate
