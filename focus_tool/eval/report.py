"""The evaluation report: per-method figures from the item records, as JSON entries, Markdown and a PNG plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from focus_tool.eval.records import LEGACY_PHASES, PHASES, ItemRecord, current_phases
from focus_tool.eval.scoring import accuracy_breakdown


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 6) if vals else None


def _phase_means(rs: Sequence[ItemRecord]) -> dict[str, dict[str, float]]:
    """Per-phase means of the computed tokens, encoded images and cached-prefix continuations (records that
    carry them; older records do not).
    """
    out: dict[str, dict[str, float]] = {}
    phases = {
        "phase_tokens": [r.phase_tokens for r in rs],
        "phase_images": [r.phase_images for r in rs],
        "phase_continuations": [r.phase_continuations for r in rs],
    }
    for key, values in phases.items():
        have = [h for h in values if h is not None]
        if have:
            out[f"{key}_mean"] = {p: round(sum(h[p] for h in have) / len(have), 4) for p in PHASES}
    return out


def current_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A report's per-method entry with the current phase names: reports written before the rename have
    ``aux_fps_mean`` and an ``aux`` key in the ``phase_*_mean`` means, read as ``extraction``.
    """
    renamed = {f"{old}_fps_mean": f"{new}_fps_mean" for old, new in LEGACY_PHASES.items()}
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key in renamed:
            if renamed[key] in entry:  # a current name wins over an old one
                continue
            key = renamed[key]
        if key.startswith("phase_") and isinstance(value, Mapping):
            value = current_phases(value)
        out[key] = value
    return out


def summarize(records: Sequence[ItemRecord], *, benchmark: str, scheme: str) -> dict[str, Any]:
    """Per-method report entries from per-item records."""
    out: dict[str, Any] = {}
    for name in sorted({r.method for r in records}):
        rs = [r for r in records if r.method == name]
        acc = accuracy_breakdown(rs, benchmark)
        out[name] = {
            "accuracy": round(acc["accuracy"], 6),
            "n": len(rs),
            "answer_scheme": scheme,
            "search_fps_mean": _mean([r.search_fps for r in rs]),
            "answer_fps_mean": _mean([r.answer_fps for r in rs]),
            "extraction_fps_mean": _mean([r.extraction_fps for r in rs]),
            "prefill_tokens_mean": _mean([r.prefill_tokens for r in rs]),
            **_phase_means(rs),
            "tflops_mean": _mean([r.tflops for r in rs]),
            "wall_s_mean": _mean([r.wall_s for r in rs]),
            "peak_mem_mb": max((r.peak_mem_mb for r in rs), default=None),
            "breakdown": {k: v for k, v in acc.items() if k not in ("accuracy", "n")},
        }
    return out


def markdown(report: dict[str, Any]) -> str:
    """The Markdown report."""
    lines = [
        f"# {report['benchmark']} evaluation",
        "",
        f"- command: `{report['command']}`",
        f"- model: `{report['model']}`; data: `{report['data']}`; seed {report['seed']}; limit {report['limit']}",
        f"- answer scheme: **{report['answer_scheme']}**",
        f"- TFLOPs: {report['flops_formula']}",
        f"- peak memory: {report['peak_memory_kind']}",
        "",
        "| method | n | accuracy | search FPs | answer FPs | extraction FPs | prefill tokens | TFLOPs | s/question "
        "| peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: Any, nd: int = 2) -> str:
        return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)

    for name, m in report["methods"].items():
        lines.append(
            f"| {name} | {m['n']} | {100 * m['accuracy']:.2f} | {f(m['search_fps_mean'])} | {f(m['answer_fps_mean'])} "
            f"| {f(m['extraction_fps_mean'])} | {f(m['prefill_tokens_mean'], 0)} | {f(m['tflops_mean'], 4)} "
            f"| {f(m['wall_s_mean'], 3)} | {f(m['peak_mem_mb'], 0)} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """Accuracy vs search forward passes per method, drawn with PIL (no matplotlib needed)."""
    w, h, pad = 640, 420, 60
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    pts = [(n, m["search_fps_mean"] or 0.0, m["accuracy"]) for n, m in report["methods"].items()]
    xmax = max([p[1] for p in pts] + [1.0]) * 1.15
    d.line([(pad, h - pad), (w - pad // 2, h - pad)], fill="black")
    d.line([(pad, h - pad), (pad, pad // 2)], fill="black")
    d.text((w // 2 - 90, h - pad + 25), "search forward passes / question", fill="black")
    d.text((5, pad // 2 - 15), "accuracy (%)", fill="black")
    for k in range(6):
        y = h - pad - k * (h - 1.5 * pad) / 5
        d.text((pad - 30, y - 6), f"{20 * k}", fill="black")
        x = pad + k * (w - 1.5 * pad) / 5
        d.text((x - 8, h - pad + 6), f"{xmax * k / 5:.0f}", fill="black")
    colors = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    for i, (name, x, acc) in enumerate(pts):
        px = pad + x / xmax * (w - 1.5 * pad)
        py = h - pad - acc * (h - 1.5 * pad)
        c = colors[i % len(colors)]
        d.ellipse((px - 5, py - 5, px + 5, py + 5), fill=c)
        d.text((px + 8, py - 8), f"{name} ({100 * acc:.1f})", fill=c)
    d.text((pad, 8), f"{report['benchmark']}, {report['answer_scheme']}", fill="black")
    img.save(path)
    return path
