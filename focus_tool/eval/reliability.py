"""Accuracy against confidence: the reliability table and plot, and the choice of the low-confidence threshold.

A result's answer confidence (:class:`focus_tool.result.AnswerEvidence`) is the model's own probability of its
answer. Whether it can be trusted is measured, not assumed: :func:`reliability_table` bins answers by confidence and
gives each bin's accuracy (a calibrated model's accuracy equals its mean confidence); :func:`choose_low_confidence`
picks the threshold under which answers are flagged ``low_confidence``, on the validation stream only (never on the
test split): the highest confidence under which the answers were right at most half the time (more likely wrong
than right), over at least ``min_below`` answers.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BIN_EDGES: tuple[float, ...] = (0.0, 0.5, 0.7, 0.9, 0.99, 1.0)


def reliability_table(
    confidence: Sequence[float], correct: Sequence[bool], edges: Sequence[float] = BIN_EDGES
) -> list[dict[str, Any]]:
    """Per confidence bin [lo, hi) (the last one closed): n, mean confidence and accuracy (%); empty bins kept."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    rows = []
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        last = i == len(edges) - 2
        inside = (conf >= lo) & ((conf <= hi) if last else (conf < hi))
        n = int(inside.sum())
        rows.append(
            {
                "bin": f"[{lo:g}, {hi:g}{']' if last else ')'}",
                "n": n,
                "mean_confidence": round(float(conf[inside].mean()), 4) if n else None,
                "accuracy": round(100 * float(ok[inside].mean()), 2) if n else None,
            }
        )
    return rows


def expected_calibration_error(table: Sequence[dict[str, Any]]) -> float:
    """The n-weighted mean of |accuracy - mean confidence| over the bins of :func:`reliability_table` (0-1)."""
    total = sum(r["n"] for r in table)
    if not total:
        return float("nan")
    gap = sum(r["n"] * abs(r["accuracy"] / 100 - r["mean_confidence"]) for r in table if r["n"])
    return round(gap / total, 4)


def choose_low_confidence(
    confidence: Sequence[float], correct: Sequence[bool], *, max_accuracy: float = 0.5, min_below: int = 10
) -> dict[str, Any]:
    """The low-confidence threshold: the highest t such that the answers with confidence < t number at least
    ``min_below`` and are right at most ``max_accuracy`` of the time; 0 (never flag) when no t qualifies.

    Returns:
        ``{"threshold", "n_below", "accuracy_below", "accuracy_above", "rule"}`` (accuracies in %).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    best = 0.0
    for t in np.unique(conf):
        below = conf < t
        if below.sum() >= min_below and ok[below].mean() <= max_accuracy:
            best = float(t)
    below = conf < best
    return {
        "threshold": round(best, 4),
        "n_below": int(below.sum()),
        "accuracy_below": round(100 * float(ok[below].mean()), 2) if below.any() else None,
        "accuracy_above": round(100 * float(ok[~below].mean()), 2) if (~below).any() else None,
        "rule": f"highest t with accuracy <= {100 * max_accuracy:g} % over >= {min_below} answers below it",
    }


def plot_reliability(table: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """One slot per bin: a bar at the bin's accuracy, a red line at its mean confidence (where a calibrated model's
    bar would end) and n above; a PNG drawn with PIL.
    """
    w, h = 520, 340
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=12)
    x0, y0, x1, y1 = 44, 40, w - 12, h - 44
    slot = (x1 - x0) / max(1, len(table))

    def y(v: float) -> float:
        return y1 - v * (y1 - y0)

    d.rectangle((x0, y0, x1, y1), outline=(0, 0, 0))
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        d.line((x0 - 4, y(v), x0, y(v)), fill=(0, 0, 0))
        d.text((6, y(v) - 7), f"{100 * v:g} %", fill=(0, 0, 0), font=font)
    for i, r in enumerate(table):
        left, right = x0 + i * slot + 6, x0 + (i + 1) * slot - 6
        d.text((left, y1 + 8), r["bin"], fill=(0, 0, 0), font=font)
        if not r["n"]:
            d.text((left, y1 - 18), "n = 0", fill=(120, 120, 120), font=font)
            continue
        acc = r["accuracy"] / 100
        d.rectangle((left, y(acc), right, y1), fill=(70, 130, 200), outline=(20, 60, 120))
        d.line((left - 3, y(r["mean_confidence"]), right + 3, y(r["mean_confidence"])), fill=(220, 40, 30), width=3)
        d.text((left, y(acc) - 16), f"n = {r['n']}", fill=(0, 0, 0), font=font)
    d.text((x0, 6), title, fill=(0, 0, 0), font=font)
    d.text((x0, 22), "bars: accuracy per confidence bin; red: the bin's mean confidence", fill=(0, 0, 0), font=font)
    d.text(((x0 + x1) / 2 - 50, h - 20), "answer confidence", fill=(0, 0, 0), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def evidence_markdown(s: dict[str, Any]) -> list[str]:
    """The synthetic report's answer-evidence section (Markdown lines) from its summary ``s``: answered on a
    region, the reliability table, the low-confidence threshold (and its choice on a validation split).
    """
    low = s["low_confidence"]
    lines = [
        "## Answer evidence",
        "",
        f"FOCUS answered on a region in {s['answered_on_region']} % of questions. Accuracy against the answer's "
        f"confidence (the chosen option's probability; expected calibration error {s['reliability']['ece']}; "
        "plot: `reliability.png`):",
        "",
        "| confidence | n | mean confidence | accuracy % |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['bin']} | {r['n']} | {'-' if r['n'] == 0 else r['mean_confidence']} | "
        f"{'-' if r['n'] == 0 else r['accuracy']} |"
        for r in s["reliability"]["table"]
    ]
    lines += [
        "",
        f"The preset's `answer.low_confidence` is {low['threshold']}: {low['flagged']} % of these answers carry a "
        "`low_confidence` warning.",
    ]
    if "choice" in low:
        c = low["choice"]
        lines += [
            "",
            f"Threshold choice on this validation split ({c['rule']}): **{c['threshold']}**; below it "
            f"{c['n_below']} answers, {c['accuracy_below']} % right; above it {c['accuracy_above']} % right.",
        ]
    return [*lines, ""]
