"""After Stage V: whether a target was found, the warnings a caller must see, and the regions the answer uses.

found (best c_Yes >= ``rank.found_conf``), ambiguous (several regions above it for a single-instance target),
not found (none above it, or nothing proposed) and unverified (ranking off).
"""

from __future__ import annotations

from collections.abc import Sequence

from focus_tool.config import FocusConfig
from focus_tool.result import ResultWarning, TargetStatus
from focus_tool.steps.ranking import Ranking, map_doubts
from focus_tool.steps.targets import Target


def target_status(
    target: Target, ranking: Ranking, anchor_scores: Sequence[float], cfg: FocusConfig
) -> tuple[TargetStatus, list[ResultWarning], tuple[int, ...]]:
    """Found / not found / ambiguous from the scored P(Yes), the warnings, and the ROIs to select.

    Args:
        target: the target searched.
        ranking: Stage V's outcome for its regions.
        anchor_scores: the regions' anchor scores (the map's peaks: a flat map is a warning).
        cfg: ``rank`` (thresholds) and ``answer.on_not_found`` (what a not-found target selects).

    Returns:
        The target's status, its warnings and the selected region indices (best first).
    """
    thr = cfg.rank.found_conf
    conf = ranking.confidence
    warnings: list[ResultWarning] = []
    name = target.phrase
    if "flat_map" in map_doubts(anchor_scores, cfg.rank):
        warnings.append(
            ResultWarning(
                code="flat_map",
                target=name,
                message=f"the relevance map of {name!r} has no clear peak; its regions are a guess",
            )
        )
    if not ranking.selected and not conf:  # no region proposed at all
        state = TargetStatus(target=name, state="not_found", confidence=None, threshold=thr, regions_above=0)
        return state, warnings, ()
    if not conf:  # ranking off (n_steps 1 without overrun)
        state = TargetStatus(target=name, state="unverified", confidence=None, threshold=thr, regions_above=0)
        return state, warnings, ranking.selected
    best = max(conf.values())
    above = sum(c >= thr for c in conf.values())
    if best < thr:
        warnings.append(
            ResultWarning(
                code="all_crops_no",
                target=name,
                message=f"every region checked for {name!r} was answered No (best P(Yes) {best:.3f} < {thr})",
            )
        )
        state = TargetStatus(target=name, state="not_found", confidence=best, threshold=thr, regions_above=0)
        if cfg.answer.on_not_found == "full_image":
            return state, warnings, ()
        warnings.append(
            ResultWarning(
                code="answered_below_threshold",
                target=name,
                message=f"answered on the best region of {name!r} although it is below the threshold "
                "(answer.on_not_found='best_region', the paper's rule)",
            )
        )
        return state, warnings, ranking.selected
    selected = tuple(i for i in ranking.selected if conf.get(i, 0.0) >= thr)
    if not target.all_instances and above > 1:
        warnings.append(
            ResultWarning(
                code="ambiguous",
                target=name,
                message=f"{above} regions look like {name!r} (P(Yes) >= {thr}); the answer used the most "
                "confident one, check the others",
            )
        )
        state = TargetStatus(target=name, state="ambiguous", confidence=best, threshold=thr, regions_above=above)
        return state, warnings, selected
    state = TargetStatus(target=name, state="found", confidence=best, threshold=thr, regions_above=above)
    return state, warnings, selected
