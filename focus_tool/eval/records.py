"""Per-item records of an evaluation run and their JSONL files.

One record per (method, item): what was asked and answered, whether it was correct, and what it cost. The runner
appends records to ``<report>.items.jsonl`` (or a rank shard), the report (:mod:`focus_tool.eval.report`) and the
scorer (:func:`focus_tool.eval.benchmarks.accuracy_breakdown`) read them; every crossing is an :class:`ItemRecord`.
A line is the record's fields in declaration order, so files written before this module existed read back equal;
files written before the target-extraction phase was named ``extraction`` spell it ``aux`` (``aux_fps``, the ``aux``
key of the ``phase_*`` counts) and read back with the current names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Final, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

logger = logging.getLogger(__name__)

PHASES: Final[tuple[str, ...]] = ("search", "answer", "extraction")
"""The phases a forward pass is counted in (FOCUS App. A.2)."""
LEGACY_PHASES: Final[Mapping[str, str]] = {"aux": "extraction"}
"""Old phase name -> current one, for records and reports written before the rename."""
EXTRA_KEYS: Final[tuple[str, ...]] = ("cycle_category", "task", "subtask")
"""The item fields beyond the category that the official scorers group by (HR-Bench cycles, MME-RealWorld)."""


# the first fields of a line, as every records file has them; the other fields follow in declaration order
_LINE_HEAD: Final[tuple[str, ...]] = ("item_id", "method", "category", "extra", "answer", "pred", "reply", "correct")

_V = TypeVar("_V")


def current_phases(counts: Mapping[str, _V]) -> dict[str, _V]:
    """Per-phase values keyed by the current phase names (an old name, see :data:`LEGACY_PHASES`, renamed)."""
    out = {LEGACY_PHASES.get(k, k): v for k, v in counts.items()}
    out.update((k, v) for k, v in counts.items() if k not in LEGACY_PHASES)  # a current name wins over an old one
    return out


class Scored(BaseModel):
    """What the accuracy of a set of items is computed from.

    Attributes:
        correct: the prediction equals the answer.
        category: the benchmark's question category.
        extra: the :data:`EXTRA_KEYS` the item carries.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    correct: bool
    category: str = ""
    extra: dict[str, str] = {}


class ItemRecord(Scored):
    """One question answered by one method (a line of ``<report>.items.jsonl``).

    Attributes:
        item_id: the benchmark item.
        method: the registered method name.
        answer: the correct option letter.
        pred: the predicted letter ("" if none parsed).
        reply: the model's reply (the option text under the logit scheme).
        search_fps / answer_fps / extraction_fps: forward passes per phase (``aux_fps`` read as
            ``extraction_fps``).
        prefill_tokens: prefill tokens over all calls.
        phase_tokens / phase_images / phase_continuations: per phase, computed tokens, encoded images and
            cached-prefix continuations (absent from records of older runs; an ``aux`` key read as ``extraction``).
        tflops: analytic LLM TFLOPs (None without counted calls or model dimensions).
        answer_boxes: the boxes the answer was made on, image pixels.
        wall_s: seconds for the question.
        peak_mem_mb: peak memory so far (MiB).
    """

    item_id: str
    method: str
    answer: str
    pred: str
    reply: str
    search_fps: int
    answer_fps: int
    extraction_fps: int = Field(validation_alias=AliasChoices("extraction_fps", "aux_fps"))
    prefill_tokens: int
    phase_tokens: dict[str, int] | None = None
    phase_images: dict[str, int] | None = None
    phase_continuations: dict[str, int] | None = None
    tflops: float | None = None
    answer_boxes: list[list[int]] = []
    wall_s: float
    peak_mem_mb: float

    @field_validator("phase_tokens", "phase_images", "phase_continuations", mode="before")
    @classmethod
    def _current_phase_names(cls, v: object) -> object:
        return current_phases(v) if isinstance(v, Mapping) else v

    @property
    def key(self) -> tuple[str, str]:
        """The resume key: (method, item id)."""
        return self.method, self.item_id

    def to_line(self) -> str:
        """The JSONL line (with its newline): the fields in the files' order, phase fields only when set."""
        data = self.model_dump(mode="json")
        row = {k: data.pop(k) for k in _LINE_HEAD}
        row.update((k, v) for k, v in data.items() if v is not None or not k.startswith("phase_"))
        return json.dumps(row) + "\n"


def items_path(report: Path) -> Path:
    """The merged per-item JSONL next to the report."""
    return report.with_name(report.stem + ".items.jsonl")


def shard_path(report: Path, rank: int) -> Path:
    """The JSONL a data-parallel rank appends to before rank 0 merges it."""
    return report.with_name(f"{report.stem}.items.rank{rank}.jsonl")


def shard_paths(report: Path) -> list[Path]:
    """Every rank shard next to the report, sorted."""
    return sorted(report.parent.glob(f"{report.stem}.items.rank*.jsonl"))


def read_records(path: Path) -> list[ItemRecord]:
    """Records of a JSONL file (a torn or invalid line, e.g. the last of an interrupted run, is skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(ItemRecord.model_validate_json(line))
        except ValueError:
            logger.warning("skipping a malformed line in %s", path)
    return out


def append_record(path: Path, record: ItemRecord) -> None:
    """Append one record to a JSONL file."""
    with path.open("a") as f:
        f.write(record.to_line())


def done_keys(report: Path) -> set[tuple[str, str]]:
    """The (method, item id) of every record written for ``report`` (merged file and shards)."""
    return {r.key for f in [items_path(report), *shard_paths(report)] for r in read_records(f)}


def merge_records(report: Path, order: Mapping[str, int]) -> list[ItemRecord]:
    """Merge the shards into ``<report>.items.jsonl`` (first record per key wins), sorted by method then item order.

    Args:
        report: the report path.
        order: item id -> position in the benchmark (ids not in it go last).

    Returns:
        The merged records.
    """
    files = [items_path(report), *shard_paths(report)]
    by_key: dict[tuple[str, str], ItemRecord] = {}
    for f in files:
        for r in read_records(f):
            by_key.setdefault(r.key, r)
    merged = sorted(by_key.values(), key=lambda r: (r.method, order.get(r.item_id, 1 << 30), r.item_id))
    tmp = items_path(report).with_suffix(".tmp")
    tmp.write_text("".join(r.to_line() for r in merged))
    tmp.replace(items_path(report))
    for f in files[1:]:
        f.unlink()
    return merged
