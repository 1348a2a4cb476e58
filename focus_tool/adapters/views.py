"""Adapters whose image is several views, each a ``side x side`` grid of tokens (tiles, a thumbnail, crops).

:class:`MultiViewAdapter` holds what every such adapter does the same way once its :meth:`~MultiViewAdapter.views`
are known: the token count of an image, every token's pixel box (through each view's
:class:`~focus_tool.grid.PatchGrid`, the one coordinate owner) and the image-token positions of a prefill, checked
against that count (Gemma 3's pan-and-scan crops). :class:`TiledAdapter` adds the views of a model that cuts the image
into a grid of equal tiles plus one overview of the whole image (InternVL's thumbnail, SmolVLM's global image): the
views, the map grid (the tiles stitched together), each map cell's token and the map positions of a prefill. What
differs stays in the adapter: the tile grid the processor picks (:meth:`TiledAdapter.tile_grid`) and whether an
overview follows the tiles (:meth:`TiledAdapter._has_overview`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt
import torch

from focus_tool.adapters.chat import ChatTemplateAdapter
from focus_tool.grid import PatchGrid


class View(Protocol):
    """One view of an image: where its tokens start among the image's tokens and its token grid."""

    @property
    def token_start(self) -> int:
        """Offset of the view's first token among the image's tokens."""
        ...

    @property
    def grid(self) -> PatchGrid:
        """The view's token grid and its mapping to image pixels."""
        ...


@dataclass(frozen=True)
class TileView:
    """One view of an image: a tile of the resized canvas or the overview of the whole image, and its tokens.

    Attributes:
        kind: "tile", or the overview: "thumbnail" (InternVL) / "global" (SmolVLM).
        row, col: the tile's place in the tile grid ((0, 0) for the overview).
        token_start: index of the view's first token among the image's tokens.
        grid: the view's ``side x side`` token grid over its box of image pixels.
    """

    kind: Literal["tile", "thumbnail", "global"]
    row: int
    col: int
    token_start: int
    grid: PatchGrid


class MultiViewAdapter(ChatTemplateAdapter):
    """An adapter whose image tokens are its views' ``side x side`` grids, view after view, each row-major.

    The subclass sets :attr:`side` (in ``_configure``) and gives :meth:`views`.
    """

    side: int  # tokens per view side

    @abstractmethod
    def views(self, image_wh: tuple[int, int]) -> Sequence[View]:
        """Every view of an image of ``image_wh`` in token order."""

    def num_image_tokens(self, image_wh: tuple[int, int]) -> int:
        """Image tokens of one image: ``side^2`` per view, the layout tokens around them not counted."""
        return len(self.views(image_wh)) * self.side**2

    def token_boxes(self, image_wh: tuple[int, int]) -> npt.NDArray[np.float64]:
        """(n_tokens, 4) float ``xyxy`` image-pixel box of every image token of one image, in order."""
        s = self.side
        r, c = np.divmod(np.arange(s * s), s)
        cells = np.stack([c, r, c + 1, r + 1], axis=1).astype(np.float64)  # (s*s, 4) row-major, in token order
        return np.concatenate([v.grid.cells_to_image_xyxy(cells) for v in self.views(image_wh)])

    def _image_positions(self, enc: Any, image_wh: tuple[int, int]) -> torch.Tensor:
        """(n_tokens,) sequence positions of the image tokens of the one-image prefill ``enc``, in order.

        Raises:
            RuntimeError: if the prompt holds another number of image tokens than :meth:`num_image_tokens`.
        """
        image_pos = torch.nonzero(enc["input_ids"][0] == self.image_token_id).flatten()
        n = self.num_image_tokens(image_wh)
        if len(image_pos) != n:
            raise RuntimeError(f"expected {n} image tokens ({len(self.views(image_wh))} views), found {len(image_pos)}")
        return image_pos


class TiledAdapter(MultiViewAdapter):
    """A model that cuts the image into ``cols x rows`` equal tiles (row-major) and may add one overview after them.

    The subclass sets :attr:`side` and :attr:`tile_px` (in ``_configure``), names its overview
    (:attr:`overview_kind`) and gives :meth:`tile_grid`; the relevance map is the tiles stitched together.
    """

    tile_px: int  # the tile side the vision tower takes
    overview_kind: ClassVar[Literal["thumbnail", "global"]]

    @property
    def encoder_px(self) -> int:
        """The tile side the vision tower takes."""
        return self.tile_px

    @abstractmethod
    def tile_grid(self, image_wh: tuple[int, int]) -> tuple[int, int]:
        """(cols, rows) of the tile grid the processor picks for an image of ``image_wh``; (0, 0): no tiles."""

    def _has_overview(self, n_tiles: int) -> bool:
        """Whether the overview follows ``n_tiles`` tiles (here: always)."""
        return True

    def views(self, image_wh: tuple[int, int]) -> list[TileView]:
        """Every view of the image in token order: the tiles row-major, then the overview (:meth:`_has_overview`)."""
        cols, rows = self.tile_grid(image_wh)
        w, h = image_wh
        n = self.side**2
        tile = (self.tile_px, self.tile_px)
        out = []
        for i in range(cols * rows):
            r, c = divmod(i, cols)
            box = (c * w / cols, r * h / rows, (c + 1) * w / cols, (r + 1) * h / rows)
            out.append(TileView("tile", r, c, i * n, PatchGrid(image_wh, box, self.side, self.side, tile)))
        if self._has_overview(cols * rows):
            overview = PatchGrid.stretched(image_wh, self.side, self.side, tile)
            out.append(TileView(self.overview_kind, 0, 0, cols * rows * n, overview))
        return out

    def grid_for(self, image_wh: tuple[int, int]) -> PatchGrid:
        """The tiles stitched together, (rows side) x (cols side) cells over the whole image; an image without
        tiles: the overview's side x side grid.
        """
        cols, rows = self.tile_grid(image_wh)
        if cols * rows == 0:
            return PatchGrid.stretched(image_wh, self.side, self.side, (self.tile_px, self.tile_px))
        s = self.side
        return PatchGrid.stretched(image_wh, rows * s, cols * s, (cols * self.tile_px, rows * self.tile_px))

    def map_token_indices(self, image_wh: tuple[int, int]) -> npt.NDArray[np.int64]:
        """(grid rows, grid cols) index into the image's tokens of each map cell (:meth:`grid_for`)."""
        cols, rows = self.tile_grid(image_wh)
        s = self.side
        local = np.arange(s * s, dtype=np.int64).reshape(s, s)  # row-major within a view (pixel-shuffle order)
        if cols * rows == 0:
            return local  # the overview is the only view
        out = np.zeros((rows * s, cols * s), dtype=np.int64)
        for v in self.views(image_wh):
            if v.kind == "tile":
                out[v.row * s : (v.row + 1) * s, v.col * s : (v.col + 1) * s] = v.token_start + local
        return out

    def _map_positions(self, enc: Any, image_wh: tuple[int, int]) -> tuple[list[int], PatchGrid]:
        """The tiles' tokens in stitched row-major order over the whole image, and that grid (no overview, unless
        it is the only view).
        """
        grid = self.grid_for(image_wh)
        image_pos = self._image_positions(enc, image_wh)
        index = torch.from_numpy(self.map_token_indices(image_wh)).flatten()
        return image_pos.cpu()[index].tolist(), grid
