"""One target's candidate regions in image pixels: the validated container Stages IV-V pass along.

The supervision ``Detections`` habit: parallel arrays (boxes, anchor scores) live in one object that checks their
shapes once and is indexed as a whole, so a filter can never drop a box and keep its score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from focus_tool.grid import PatchGrid
from focus_tool.ops.boxes import expand_to_min_size
from focus_tool.result import Region
from focus_tool.steps.proposals import Proposals

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Regions:
    """Boxes ``(N, 4)`` xyxy in image px (float) and their anchor scores ``(N,)``, best anchor first."""

    boxes: FloatArray  # (N, 4) image px
    anchor_scores: FloatArray  # (N,) A_bar at each box's anchor

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"boxes must be (N, 4), got {self.boxes.shape}")
        if self.anchor_scores.shape != (len(self.boxes),):
            raise ValueError(f"anchor_scores must be ({len(self.boxes)},), got {self.anchor_scores.shape}")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: npt.NDArray[np.bool_] | Sequence[int]) -> Regions:
        """The regions at a boolean mask or a list of indices, in that order."""
        idx = np.asarray(index)
        if idx.dtype != np.bool_:
            idx = idx.astype(np.int64).reshape(-1)
        return Regions(self.boxes[idx].reshape(-1, 4), self.anchor_scores[idx].reshape(-1))

    @classmethod
    def from_proposals(
        cls, proposals: Proposals, grid: PatchGrid, image_wh: tuple[int, int], min_crop_px: int = 0
    ) -> Regions:
        """Cell boxes -> image px through ``grid``, clipped to the view; boxes under 1 px dropped.

        Args:
            proposals: Stage IV's cell boxes and anchor scores.
            grid: the map's geometry (the only owner of cell <-> pixel conversions).
            image_wh: the original image size, the bound for ``min_crop_px`` growth.
            min_crop_px: each box grown (centred, inside the image) to at least this side; 0 leaves them.

        Returns:
            The regions in proposal order.
        """
        boxes = grid.clip_xyxy(grid.cells_to_image_xyxy(proposals.cells_xyxy))  # (N, 4) image px
        keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        regions = cls(boxes, proposals.anchor_scores)[keep]
        if min_crop_px > 0:
            regions = cls(expand_to_min_size(regions.boxes, min_crop_px, image_wh), regions.anchor_scores)
        return regions

    def ranked(
        self, grid: PatchGrid, confidence: Mapping[int, float], selected: Sequence[int], target: str
    ) -> list[Region]:
        """The result's regions: by confidence (unscored last, then proposal order), integer px, empty ones dropped.

        Args:
            grid: converts the float boxes to integer image px.
            confidence: region index -> c_Yes for the scored regions.
            selected: the indices the answer uses.
            target: the target phrase each region is for.

        Returns:
            :class:`~focus_tool.result.Region` objects with ``rank`` 1..n and empty ``id`` (the result sets ids).
        """
        int_boxes = grid.to_int_xyxy(self.boxes)
        order = sorted(range(len(self)), key=lambda i: (-confidence.get(i, -1.0), i))
        return [
            Region(
                id="",
                box=(int(int_boxes[i, 0]), int(int_boxes[i, 1]), int(int_boxes[i, 2]), int(int_boxes[i, 3])),
                confidence=confidence.get(i),
                target=target,
                rank=r + 1,
                anchor_score=round(float(self.anchor_scores[i]), 4),
                selected=i in selected,
            )
            for r, i in enumerate(order)
            if (int_boxes[i, 2] > int_boxes[i, 0] and int_boxes[i, 3] > int_boxes[i, 1])
        ]
