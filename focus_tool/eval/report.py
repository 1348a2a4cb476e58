"""The evaluation report: per-method figures from the item records, as JSON entries, Markdown and a PNG plot; and an
HTML index of the items that links each one's view (:func:`focus_tool.view.static_html`).

Views: while an item runs, the runner writes ``<report stem>_views/<method>/<item>.html`` (:func:`view_path`), the
image (downscaled to ``EVAL_VIEW_MAX_SIDE``) with the method's boxes, relevance map, answer and confidence. The index
``<report stem>.html`` (:func:`write_index`) lists every item per method, worst and best first: the wrong answers,
most confident first (the confident mistakes), then the right ones, most confident first; items without a confidence
close their group. The confidence is read back from the item's view; an item run before views existed (a resumed
report) has no view, and its row says so.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from PIL import Image, ImageDraw

from focus_tool.eval.benchmarks import accuracy_breakdown
from focus_tool.eval.records import LEGACY_PHASES, PHASES, ItemRecord, current_phases
from focus_tool.view import embedded_payload

if TYPE_CHECKING:
    from focus_tool.eval.datasets import EvalItem

EVAL_VIEW_MAX_SIDE = 768  # long side of the image in an item's view, px: small files for thousands of items
INDEX_QUESTION_CHARS = 300  # a question is cut to this many characters in the index
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


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


# ---------------------------------------------------------------------------------------------------- item views


def views_dir(report: Path) -> Path:
    """The folder of the per-item views: ``<report stem>_views`` next to the report."""
    return report.with_name(report.stem + "_views")


def index_path(report: Path) -> Path:
    """The HTML index of the items: ``<report stem>.html`` next to the report."""
    return report.with_suffix(".html")


def view_path(report: Path, method: str, item_id: str) -> Path:
    """The view of one item of one method: ``<report stem>_views/<method>/<item>.html``.

    An item id that is no plain file name (V* ids hold a ``/``) has its other characters replaced by ``_`` and a
    short hash of the id appended, so distinct ids never share a file.
    """
    return views_dir(report) / _file_name(method) / (_file_name(item_id) + ".html")


def _file_name(text: str) -> str:
    safe = _SAFE_NAME.sub("_", text).lstrip(".")
    if safe == text and safe:
        return safe
    return f"{safe[:80]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _view_confidence(path: Path) -> tuple[bool, float | None, bool]:
    """(the view exists, the answer's confidence in it, the confidence is low)."""
    if not path.is_file():
        return False, None, False
    payload = embedded_payload(path.read_text(encoding="utf-8"))
    evidence = (payload or {}).get("result", {}).get("answer_evidence") or {}
    conf = evidence.get("confidence")
    return True, float(conf) if isinstance(conf, (int, float)) else None, bool(evidence.get("low"))


def index_html(
    report: Mapping[str, Any], report_path: Path, records: Sequence[ItemRecord], items: Mapping[str, EvalItem]
) -> str:
    """The HTML index of ``records``: a table per method, worst and best items first (see the module docstring).

    Args:
        report: the JSON report (benchmark, model, per-method accuracy).
        report_path: where the report is written; views are linked relative to it.
        records: the item records.
        items: item id -> the benchmark item (question and options).

    Returns:
        A self-contained HTML document (no script, no network); every caller string escaped.
    """
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{e(str(report.get('benchmark', '')))} evaluation: items</title>",
        f"<style>{_INDEX_CSS}</style></head><body>",
        f"<h1>{e(str(report.get('benchmark', '')))} evaluation: items</h1>",
        f"<p>model <code>{e(str(report.get('model', '')))}</code>; "
        f"answer scheme {e(str(report.get('answer_scheme', '')))}"
        f'; report <a href="{quote(report_path.name)}">{e(report_path.name)}</a></p>',
        "<p>Worst and best first: the wrong answers, most confident first, then the right answers, most confident "
        "first. <em>no view</em>: the item was run before views were written (a resumed report).</p>",
    ]
    for method in sorted({r.method for r in records}):
        rows = [
            (r, *_view_confidence(view_path(report_path, method, r.item_id))) for r in records if r.method == method
        ]
        rows.sort(key=lambda row: (row[0].correct, -(row[2] if row[2] is not None else -1.0)))
        acc = report.get("methods", {}).get(method, {}).get("accuracy")
        shown = f"accuracy {100 * acc:.2f} %, " if isinstance(acc, (int, float)) else ""
        parts.append(f"<h2>{e(method)}: {shown}{len(rows)} items</h2>")
        parts.append(
            "<table><thead><tr><th>#</th><th>item</th><th>question</th><th>prediction</th><th>correct</th>"
            "<th>confidence</th><th>view</th></tr></thead><tbody>"
        )
        for i, (r, has_view, conf, low) in enumerate(rows, 1):
            item = items.get(r.item_id)
            question = item.question if item is not None else ""
            if len(question) > INDEX_QUESTION_CHARS:
                question = question[: INDEX_QUESTION_CHARS - 3] + "..."
            href = view_path(report_path, method, r.item_id).relative_to(report_path.parent).as_posix()
            link = f'<a href="{e(quote(href))}">open</a>' if has_view else "<em>no view</em>"
            confidence = "-" if conf is None else f"{conf:.3f}" + (" <span class=low>low</span>" if low else "")
            parts.append(
                f'<tr class="{"right" if r.correct else "wrong"}"><td>{i}</td><td>{e(r.item_id)}</td>'
                f"<td>{e(question)}</td><td>{e(_choice(r.pred, r.reply, item))}</td>"
                f"<td>{e(_choice(r.answer, '', item))}</td><td>{confidence}</td><td>{link}</td></tr>"
            )
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _choice(letter: str, reply: str, item: EvalItem | None) -> str:
    """``letter`` with its option text (or the model's reply when the letter names no option)."""
    text = ""
    if item is not None and len(letter) == 1 and 0 <= ord(letter) - ord("A") < len(item.options):
        text = item.options[ord(letter) - ord("A")]
    text = text or " ".join(reply.split())[:80]
    if letter and text:
        return f"{letter} ({text})"
    return letter or text or "-"


def write_index(
    report: Mapping[str, Any], report_path: Path, records: Sequence[ItemRecord], items: Mapping[str, EvalItem]
) -> Path:
    """Write :func:`index_html` to :func:`index_path`; returns that path."""
    path = index_path(report_path)
    path.write_text(index_html(report, report_path, records, items), encoding="utf-8")
    return path


_INDEX_CSS = (
    "body{font-family:system-ui,sans-serif;margin:12px;line-height:1.4}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}"
    "th{white-space:nowrap}"
    "tr.wrong td:first-child{border-left:4px solid #c62828}tr.right td:first-child{border-left:4px solid #2e7d32}"
    ".low{color:#8a4b00;font-weight:600}"
)
