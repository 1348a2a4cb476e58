"""The one object that owns coordinate conversions: original pixels <-> model view <-> token grid <-> crop.

Frames:
- *image*: pixels of the original image after EXIF transpose, origin top-left, x right, y down.
- *view*: the square (or rectangle) the grid spans, in image pixels; it may extend past the image (LLaVA-1.5's
  pad-to-square band lies outside [0, W) x [0, H)).
- *cells*: the token grid, ``rows x cols``; a cell box ``[c0, r0, c1, r1)`` is half-open in cell units.
- *input*: pixels of the model input (e.g. 336 x 336 or 96 x 96).
- *crop*: pixels of a crop cut from the image; its origin is the crop box's top-left corner in image pixels.

Boxes that leave the library are integer ``xyxy`` in image pixels (:meth:`PatchGrid.to_int_xyxy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PatchGrid:
    """Geometry of one image as a model sees it.

    Attributes:
        image_wh: (W, H) of the original image after EXIF transpose.
        view_xyxy: the rectangle of image pixels the token grid spans (may extend past the image: padding).
        rows, cols: the token grid (after any patch merging / downsampling).
        input_wh: (w, h) of the model input in pixels the view is resized to.
    """

    image_wh: tuple[int, int]
    view_xyxy: tuple[float, float, float, float]
    rows: int
    cols: int
    input_wh: tuple[int, int]

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"grid must be at least 1 x 1, got {self.rows} x {self.cols}")
        x0, y0, x1, y1 = self.view_xyxy
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"view_xyxy must have positive size, got {self.view_xyxy}")

    # ------------------------------------------------------------------ constructors

    @classmethod
    def padded_square(cls, image_wh: tuple[int, int], side_cells: int, input_px: int) -> PatchGrid:
        """LLaVA-1.5 geometry: the image centred on a square of side max(W, H), resized to ``input_px``.

        The pad offsets are ((S - W) // 2, (S - H) // 2) as in ``LlavaImageProcessor.pad_to_square``.
        """
        w, h = image_wh
        s = max(w, h)
        px, py = (s - w) // 2, (s - h) // 2
        return cls(image_wh, (-px, -py, s - px, s - py), side_cells, side_cells, (input_px, input_px))

    @classmethod
    def stretched(cls, image_wh: tuple[int, int], rows: int, cols: int, input_wh: tuple[int, int]) -> PatchGrid:
        """Geometry of a model that resizes the whole image onto its grid (no padding, no crop)."""
        w, h = image_wh
        return cls(image_wh, (0.0, 0.0, float(w), float(h)), rows, cols, input_wh)

    @classmethod
    def anyres_local(cls, image_wh: tuple[int, int], rows: int, cols: int, input_wh: tuple[int, int]) -> PatchGrid:
        """LLaVA-OneVision's local (anyres) grid after unpadding and the ``anyres_max_N`` shrink (docs/method.md,
        Geometry).

        The tiles cover the image resized into the best pinpoint resolution and padded; unpadding removes the pad
        rows (or columns) of feature cells, so the ``rows x cols`` grid spans the whole image: a cell is W / cols by
        H / rows image pixels. The bilinear shrink keeps that span. (Unpadding rounds to whole cells, so a cell's
        true footprint can be off by under one cell at the padded edges.)
        """
        return cls.stretched(image_wh, rows, cols, input_wh)

    # ------------------------------------------------------------------ scales

    @property
    def cell_wh(self) -> tuple[float, float]:
        """Size of one cell in image pixels."""
        x0, y0, x1, y1 = self.view_xyxy
        return (x1 - x0) / self.cols, (y1 - y0) / self.rows

    def downsampled(self, factor: int) -> PatchGrid:
        """The grid after ``factor`` x ``factor`` average pooling in ceil mode (covers the same view)."""
        if factor == 1:
            return self
        rows, cols = -(-self.rows // factor), -(-self.cols // factor)
        x0, y0, _, _ = self.view_xyxy
        cw, ch = self.cell_wh
        return PatchGrid(
            self.image_wh, (x0, y0, x0 + cols * factor * cw, y0 + rows * factor * ch), rows, cols, self.input_wh
        )

    # ------------------------------------------------------------------ conversions

    def cells_to_image_xyxy(self, cells: FloatArray) -> FloatArray:
        """(N, 4) cell boxes [c0, r0, c1, r1) -> (N, 4) float boxes in image pixels (not clipped)."""
        cells = np.asarray(cells, dtype=np.float64).reshape(-1, 4)
        x0, y0, _, _ = self.view_xyxy
        cw, ch = self.cell_wh
        return cells * np.array([cw, ch, cw, ch]) + np.array([x0, y0, x0, y0])  # (N, 4)

    def image_xyxy_to_cells(self, xyxy: FloatArray) -> FloatArray:
        """(N, 4) image-pixel boxes -> (N, 4) fractional cell boxes (inverse of :meth:`cells_to_image_xyxy`)."""
        xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        x0, y0, _, _ = self.view_xyxy
        cw, ch = self.cell_wh
        return (xyxy - np.array([x0, y0, x0, y0])) / np.array([cw, ch, cw, ch])

    def image_to_input_xy(self, xy: FloatArray) -> FloatArray:
        """(N, 2) image-pixel points -> (N, 2) model-input pixels."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        x0, y0, x1, y1 = self.view_xyxy
        return (xy - np.array([x0, y0])) * np.array([self.input_wh[0] / (x1 - x0), self.input_wh[1] / (y1 - y0)])

    def input_to_image_xy(self, xy: FloatArray) -> FloatArray:
        """(N, 2) model-input pixels -> (N, 2) image pixels."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        x0, y0, x1, y1 = self.view_xyxy
        return xy * np.array([(x1 - x0) / self.input_wh[0], (y1 - y0) / self.input_wh[1]]) + np.array([x0, y0])

    def clip_xyxy(self, xyxy: FloatArray) -> FloatArray:
        """(N, 4) boxes clipped to the image."""
        w, h = self.image_wh
        return np.clip(np.asarray(xyxy, dtype=np.float64).reshape(-1, 4), 0, [w, h, w, h])

    def to_int_xyxy(self, xyxy: FloatArray) -> npt.NDArray[np.int64]:
        """(N, 4) float image boxes -> integer boxes inside the image (floor of x0/y0, ceil of x1/y1)."""
        b = self.clip_xyxy(xyxy)
        out = np.concatenate([np.floor(b[:, :2]), np.ceil(b[:, 2:])], axis=1).astype(np.int64)
        w, h = self.image_wh
        return np.clip(out, 0, [w, h, w, h])

    def padding_mask(self) -> npt.NDArray[np.bool_]:
        """(rows, cols) True where a cell lies wholly outside the image (in the pad band)."""
        w, h = self.image_wh
        r, c = np.meshgrid(np.arange(self.rows), np.arange(self.cols), indexing="ij")
        boxes = self.cells_to_image_xyxy(np.stack([c, r, c + 1, r + 1], axis=-1).reshape(-1, 4).astype(np.float64))
        outside = (boxes[:, 2] <= 0) | (boxes[:, 0] >= w) | (boxes[:, 3] <= 0) | (boxes[:, 1] >= h)
        return outside.reshape(self.rows, self.cols)

    @staticmethod
    def crop_to_image_xyxy(crop_xyxy: FloatArray, crop_origin_xy: tuple[float, float]) -> FloatArray:
        """(N, 4) boxes in a crop's pixels -> image pixels, given the crop's top-left corner in image pixels."""
        ox, oy = crop_origin_xy
        return np.asarray(crop_xyxy, dtype=np.float64).reshape(-1, 4) + np.array([ox, oy, ox, oy])

    @staticmethod
    def image_to_crop_xyxy(xyxy: FloatArray, crop_origin_xy: tuple[float, float]) -> FloatArray:
        """(N, 4) image-pixel boxes -> a crop's pixels."""
        ox, oy = crop_origin_xy
        return np.asarray(xyxy, dtype=np.float64).reshape(-1, 4) - np.array([ox, oy, ox, oy])
