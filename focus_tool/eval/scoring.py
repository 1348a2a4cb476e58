"""Answer extraction and accuracy aggregation (docs/evaluation.md, ``--scheme`` and ``--benchmark``).

Answer schemes (named in every report):

- ``logit``: order-free logit matching (SEAL / ZoomEye on V*); the reply *is* the chosen option text.
- ``letter-strict``: FOCUS's "no post-processing": the reply, stripped of whitespace, one trailing period and
  surrounding parentheses, must be exactly a valid letter ("The answer is A" is wrong).
- ``letter-lenient``: a deterministic regex cascade: common answer prefixes dropped, then a leading letter
  (``A``, ``(A)``, ``A.``, ``A:``), then a parenthesised letter anywhere, then the first standalone valid letter.
- ``mme-regex``: MME-RealWorld's official extractor (``evaluation/eval_your_results.py``), used on MME-RealWorld.
- ``letter-first``: the first character of the stripped reply, if a valid letter (the synthetic benchmark's letter
  scheme, :mod:`focus_tool.eval.synthetic`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

from focus_tool.eval.records import Scored
from focus_tool.prompts import LETTERS

Scheme = Literal["logit", "letter-strict", "letter-lenient", "mme-regex", "letter-first"]
SCHEMES: Final[tuple[str, ...]] = ("logit", "letter-strict", "letter-lenient", "mme-regex", "letter-first")
_PREFIXES: Final[tuple[str, ...]] = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
    "Answer:",
)


def extract_strict(reply: str, n_options: int) -> str:
    """The letter if the reply is exactly one (after stripping whitespace, a trailing '.', and parentheses)."""
    s = reply.strip().removesuffix(".").strip()
    if s.startswith("(") and s.endswith(")"):
        s = s[1:-1].strip()
    return s if len(s) == 1 and s in LETTERS[:n_options] else ""


def extract_first(reply: str, n_options: int) -> str:
    """The reply's first character (after leading whitespace) if it is a valid letter, else ""."""
    s = reply.strip()[:1]
    return s if s and s in LETTERS[:n_options] else ""


def extract_lenient(reply: str, n_options: int) -> str:
    """Deterministic regex cascade; "" when no valid letter is found."""
    valid = LETTERS[:n_options]
    s = reply.strip()
    for prefix in _PREFIXES:
        if s.lower().startswith(prefix.lower()):
            s = s[len(prefix) :].strip(" :")
            break
    m = re.match(rf"^\(?([{valid}])\)?(?:[.:,)\s]|$)", s)
    if m:
        return m.group(1)
    m = re.search(rf"\(([{valid}])\)", s)
    if m:
        return m.group(1)
    m = re.search(rf"(?<![A-Za-z])([{valid}])(?![A-Za-z])", s)
    return m.group(1) if m else ""


def extract_mme(reply: str, choices: Sequence[str]) -> str:
    """MME-RealWorld's extractor over option strings ``"(A) ..."``.

    1. Drop the common answer prefixes. 2. A reply of more than 10 words with no A-E is empty. 3. The first A-E
    character. 4. Otherwise the option whose text contains the reply. Deviation: an empty reply stays empty (the
    original's substring test would match every option and return "A").
    """
    s = reply.strip()
    for prefix in _PREFIXES[:-1]:
        s = s.replace(prefix, "")
    if len(s.split()) > 10 and not re.search("[ABCDE]", s):
        return ""
    m = re.search("[ABCDE]", s)
    if m:
        return m.group(0)
    if not s.strip():
        return ""
    for choice in choices:
        if s.lower() in choice.lower():
            m = re.match(r"^\(([A-E])\)", choice.strip())
            return m.group(1) if m else ""
    return ""


def predicted_letter(reply: str, options: Sequence[str], scheme: str, raw_options: Sequence[str] | None = None) -> str:
    """The predicted letter of ``reply`` under ``scheme`` ("" when none): the one judge of every harness."""
    if scheme == "logit":
        return LETTERS[list(options).index(reply)] if reply in options else ""
    if scheme == "letter-strict":
        return extract_strict(reply, len(options))
    if scheme == "letter-lenient":
        return extract_lenient(reply, len(options))
    if scheme == "letter-first":
        return extract_first(reply, len(options))
    if scheme == "mme-regex":
        choices = raw_options or [f"({LETTERS[i]}) {o}" for i, o in enumerate(options)]
        return extract_mme(reply, choices)
    raise ValueError(f"unknown answer scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}")


def _acc(rs: Sequence[Scored]) -> float:
    return sum(r.correct for r in rs) / len(rs) if rs else float("nan")


def _group(rs: Sequence[Scored], key: Callable[[Scored], str]) -> dict[str, list[Scored]]:
    out: dict[str, list[Scored]] = defaultdict(list)
    for r in rs:
        out[key(r)].append(r)
    return dict(sorted(out.items()))


def _category(r: Scored) -> str:
    return r.category


def _extra(name: str) -> Callable[[Scored], str]:
    return lambda r: r.extra.get(name, "")


def accuracy_plain(records: Sequence[Scored]) -> dict[str, Any]:
    """Accuracy overall and per category (V*, the synthetic split)."""
    flat = list(records)
    return {
        "n": len(flat),
        "accuracy": _acc(flat),
        "per_category": {c: _acc(rs) for c, rs in _group(flat, _category).items()},
    }


def accuracy_cyclic(records: Sequence[Scored]) -> dict[str, Any]:
    """HR-Bench's official accuracy (VLMEvalKit ``report_acc_hrbench``).

    Accuracy within each ``cycle_category`` group, then the sum over groups divided by the number of groups, overall
    and per category. Each row is one item (one option order) of its own; a category missing from a group adds 0 to
    that sum but the divisor stays the number of groups, as in the official scorer (no difference on the full
    benchmark, where every question is in every group).
    """
    flat = list(records)
    cycles = _group(flat, _extra("cycle_category"))
    per_cycle = {c: _acc(rs) for c, rs in cycles.items()}
    return {
        "n": len(flat),
        "per_cycle": per_cycle,
        "accuracy": sum(per_cycle.values()) / len(cycles) if cycles else float("nan"),
        "per_category": {
            cat: sum(_acc(g) for g in _group(rs, _extra("cycle_category")).values()) / len(cycles)
            for cat, rs in _group(flat, _category).items()
        },
    }


def accuracy_by_task(records: Sequence[Scored]) -> dict[str, Any]:
    """MME-RealWorld: per task (Perception / Reasoning), subtask and category; overall weighted by item count."""
    out = accuracy_plain(records)
    out["per_task"] = {t: _acc(rs) for t, rs in _group(list(records), _extra("task")).items()}
    out["per_subtask"] = {t: _acc(rs) for t, rs in _group(list(records), _extra("subtask")).items()}
    return out
