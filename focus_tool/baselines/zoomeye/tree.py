"""ZoomEye's image tree (upstream ``ZoomEye/tree.py``), its priority weight (``zoom_model.py``,
``get_confidence_weight``) and the visual cues (``generate_visual_cues_using_ic``, ``get_zoom_eye_response``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch

from focus_tool.baselines.zoomeye.prompts import _PRONOUNS


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


@dataclass(frozen=True)
class VisualCue:
    """One visual cue: ``text`` as extracted ("all cars" marks a type-2 cue), ``name`` the object the prompts are
    filled with ("car"), ``all_instances`` True for type 2.
    """

    text: str
    name: str
    all_instances: bool = False

    @classmethod
    def from_text(cls, text: str) -> VisualCue:
        """ZoomEye's reading of a cue string: "all X" is type 2, with the plural "s" stripped naively (as upstream)."""
        if text.lower().startswith("all "):
            name = text[4:].strip()
            return cls(text, name[:-1] if name.endswith("s") else name, True)
        return cls(text, text)
