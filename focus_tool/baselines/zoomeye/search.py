"""ZoomEye's search trace types (upstream om-ai-lab/ZoomEye ``ZoomEye/zoom_eye.py::zoom_eye_search_type1``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from focus_tool.baselines.zoomeye.tree import Node

Event = Literal["pop", "stop", "relax_accept", "relax_continue", "give_up", "bottom_stop"]
"""pop: kept searching; stop: confident, done; relax_accept / relax_continue / give_up: the budget ran out and the
threshold was relaxed (a popped node accepted / search goes on / tau fell below tau_lower); bottom_stop: a candidate
was held back until a bottom node was visited (several cues)."""


@dataclass(frozen=True)
class TraceStep:
    """One pop of the search: the node, its answering confidence (None if not asked), the threshold in force."""

    node: str
    answering: float | None
    tau: float
    event: Event = "pop"
    new_tau: float | None = None


@dataclass
class SearchOutcome:
    """The result of one type-1 search: the chosen node (or None) and the step-by-step trace."""

    node: Node | None
    trace: list[TraceStep]
    pops: int
    max_depth: int
