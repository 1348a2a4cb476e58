"""Benchmark loaders: V*Bench, HR-Bench 4K/8K, MME-RealWorld-Lite, and the synthetic split, from a local path only.

Formats are those listed in docs/evaluation.md (V*'s per-image JSON and ``test_questions.jsonl``, HR-Bench's TSV /
parquet, MME-RealWorld-Lite's JSON / VLMEvalKit TSV / lmms-eval parquet); nothing is ever downloaded. Every loader
returns :class:`EvalItem` rows whose ``options`` are in presentation order (letters A, B, ...) and whose
``answer_index`` points at the correct one. Which loader a ``--benchmark`` name uses is the benchmark table's
(:mod:`focus_tool.eval.benchmarks`).

V* per-image JSON stores the correct option first; presenting it in stored order with letters rewards a model that
always says "A" (docs/evaluation.md, --scheme), so the letter scheme shuffles the options with a per-item seeded RNG
(``shuffle_seed``); the logit scheme is order-free and keeps the stored order.
"""

from __future__ import annotations

import ast
import base64
import csv
import importlib
import io
import json
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from focus_tool.errors import FocusError
from focus_tool.prompts import LETTERS

_OPTION_LINE = re.compile(r"^\(([A-H])\)\s?(.*)$")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


class DatasetError(FocusError):
    """A benchmark path is missing or its files do not have the expected format."""


@dataclass(frozen=True)
class EvalItem:
    """One question: options in presentation order, the correct index, and where the image comes from."""

    item_id: str
    question: str
    options: tuple[str, ...]
    answer_index: int
    category: str
    image_path: Path | None = None
    image_b64: str | None = field(default=None, repr=False)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def answer_letter(self) -> str:
        """The correct letter in presentation order."""
        return LETTERS[self.answer_index]

    def load_image(self) -> Image.Image:
        """Decode the image (RGB)."""
        if self.image_b64 is not None:
            return Image.open(io.BytesIO(base64.b64decode(self.image_b64))).convert("RGB")
        if self.image_path is None or not self.image_path.is_file():
            raise DatasetError(f"image of item {self.item_id} not found: {self.image_path}")
        with Image.open(self.image_path) as im:
            return im.convert("RGB")


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{what} not found: {path} (benchmarks are read from a local path only)")
    return path


def _letter_index(letter: str, n: int, where: str) -> int:
    idx = LETTERS.find(letter.strip().strip("()"))
    if idx < 0 or idx >= n or len(letter.strip().strip("()")) != 1:
        raise DatasetError(f"{where}: answer {letter!r} is not one of {LETTERS[:n]}")
    return idx


def shuffled(options: list[str], correct: int, seed: int, key: str) -> tuple[tuple[str, ...], int]:
    """Options permuted by an RNG seeded from (``seed``, ``key``); returns (options, new correct index)."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    order = [int(i) for i in rng.permutation(len(options))]
    return tuple(options[i] for i in order), order.index(correct)


# ---------------------------------------------------------------------------------------------------- V*Bench


def load_vstar(path: Path, *, shuffle_seed: int | None = None) -> list[EvalItem]:
    """V*Bench: a ``test_questions.jsonl`` file, or a per-image folder (``<name>.json`` + image, first option correct).

    A per-image root may hold ``direct_attributes/`` and ``relative_position/`` (or ZoomEye's
    ``relative_positions/``); a flat folder of pairs works too (category from the JSON's ``category`` field, else
    the folder name). ``shuffle_seed`` shuffles per-image options (needed for letter answers; None keeps the stored
    order, correct = index 0).
    """
    path = _need(Path(path), "V*Bench data")
    if path.is_file():
        if path.suffix != ".jsonl":
            raise DatasetError(f"expected a .jsonl file or a folder, got {path}")
        return _load_vstar_jsonl(path)
    subdirs = [
        path / d for d in ("direct_attributes", "relative_position", "relative_positions") if (path / d).is_dir()
    ]
    folders = subdirs or [path]
    items = []
    for folder in folders:
        for js in sorted(folder.glob("*.json")):
            items.append(_vstar_item(js, folder.name, shuffle_seed))
    if not items:
        raise DatasetError(f"no V*Bench <name>.json files under {path}")
    return items


def _vstar_item(js: Path, folder_name: str, shuffle_seed: int | None) -> EvalItem:
    try:
        rec = json.loads(js.read_text())
        question, options = str(rec["question"]), [str(o) for o in rec["options"]]
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{js}: not a V*Bench record ({e})") from e
    if len(options) < 2:
        raise DatasetError(f"{js}: needs at least 2 options")
    image = next((js.with_suffix(ext) for ext in _IMAGE_EXTS if js.with_suffix(ext).is_file()), None)
    if image is None:
        raise DatasetError(f"{js}: no image next to it ({', '.join(_IMAGE_EXTS)})")
    opts, correct = (tuple(options), 0) if shuffle_seed is None else shuffled(options, 0, shuffle_seed, js.stem)
    return EvalItem(
        item_id=f"{folder_name}/{js.stem}" if folder_name else js.stem,
        question=question,
        options=opts,
        answer_index=correct,
        category=str(rec.get("category", folder_name)),
        image_path=image,
        extra={"target_object": json.dumps(rec.get("target_object", [])), "bbox": json.dumps(rec.get("bbox", []))},
    )


def parse_lettered_text(text: str) -> tuple[str, list[str], str]:
    """Split a jsonl ``text`` into (question, option texts, trailing instruction)."""
    question_lines: list[str] = []
    options: list[str] = []
    tail: list[str] = []
    for line in text.split("\n"):
        m = _OPTION_LINE.match(line.strip())
        if m and not tail:
            if LETTERS[len(options)] != m.group(1):
                raise DatasetError(f"option letters out of order in {text!r}")
            options.append(m.group(2).strip())
        elif options:
            tail.append(line)
        else:
            question_lines.append(line)
    return "\n".join(question_lines).strip(), options, "\n".join(tail).strip()


def _load_vstar_jsonl(path: Path) -> list[EvalItem]:
    items = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            question, options, _ = parse_lettered_text(str(rec["text"]))
            image, label = str(rec["image"]), str(rec["label"])
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{path}:{i + 1}: not a test_questions.jsonl row ({e})") from e
        if len(options) < 2:
            raise DatasetError(f"{path}:{i + 1}: no '(A) ...' option lines in text")
        items.append(
            EvalItem(
                item_id=str(rec.get("question_id", i)),
                question=question,
                options=tuple(options),
                answer_index=_letter_index(label, len(options), f"{path}:{i + 1}"),
                category=str(rec.get("category", "")),
                image_path=path.parent / image,
            )
        )
    return items


# ---------------------------------------------------------------------------------------------------- HR-Bench


def _tsv_rows(path: Path) -> Iterator[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise DatasetError(
            f"{path} is parquet, which needs pyarrow (pip install pyarrow); or use the TSV file of the benchmark"
        ) from None
    yield from pq.read_table(path).to_pylist()


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".tsv":
        return _tsv_rows(path)
    if path.suffix == ".parquet":
        return _parquet_rows(path)
    raise DatasetError(f"expected a .tsv or .parquet file, got {path}")


def _b64(value: Any) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict) and "bytes" in value:  # HF image feature
        return _b64(value["bytes"])
    return str(value)


def load_hrbench(path: Path) -> list[EvalItem]:
    """HR-Bench ``hr_bench_{4k,8k}.tsv`` (or .parquet): one row per cyclic option order, columns read by name."""
    path = _need(Path(path), "HR-Bench file")
    items = []
    for i, row in enumerate(_rows(path)):
        missing = [c for c in ("index", "question", "answer", "category", "image") if c not in row]
        if missing:
            raise DatasetError(f"{path}: row {i + 1} lacks column(s) {', '.join(missing)}")
        options = [str(row[c]) for c in "ABCD" if c in row and row[c] not in (None, "") and str(row[c]) != "nan"]
        items.append(
            EvalItem(
                item_id=str(row["index"]),
                question=str(row["question"]),
                options=tuple(options),
                answer_index=_letter_index(str(row["answer"]), len(options), f"{path} row {i + 1}"),
                category=str(row["category"]),
                image_b64=_b64(row["image"]),
                extra={"cycle_category": str(row.get("cycle_category", ""))},
            )
        )
    return items


# ---------------------------------------------------------------------------------------------------- MME-RealWorld


def _strip_letter(option: str) -> str:
    m = re.match(r"^\(([A-H])\)\s?(.*)$", option.strip(), flags=re.DOTALL)
    return m.group(2).strip() if m else option.strip()


def _task_of(*values: str) -> str:
    for v in values:
        head = v.split("/")[0].strip()
        if head in ("Perception", "Reasoning"):
            return head
    return ""


def load_mme_realworld(path: Path) -> list[EvalItem]:
    """MME-RealWorld-Lite: official JSON (list of records), VLMEvalKit TSV, or lmms-eval parquet."""
    path = _need(Path(path), "MME-RealWorld-Lite file")
    if path.suffix == ".json":
        return _mme_json(path)
    items = []
    for i, row in enumerate(_rows(path)):
        raw = row.get("multi-choice options")
        if raw is None:
            raise DatasetError(f"{path}: row {i + 1} lacks the 'multi-choice options' column")
        choices = ast.literal_eval(raw) if isinstance(raw, str) else list(raw)  # a Python list literal, never eval
        image = row.get("image", row.get("bytes"))
        if image is None:
            raise DatasetError(f"{path}: row {i + 1} has no 'image' / 'bytes' column")
        category, l2 = str(row.get("category", "")), str(row.get("l2-category", ""))
        items.append(
            EvalItem(
                item_id=str(row["index"]),
                question=str(row["question"]),
                options=tuple(_strip_letter(c) for c in choices),
                answer_index=_letter_index(str(row["answer"]), len(choices), f"{path} row {i + 1}"),
                category=category,
                image_b64=_b64(image),
                extra={"task": _task_of(category, l2), "subtask": l2, "raw_options": json.dumps(list(choices))},
            )
        )
    return items


def _mme_json(path: Path) -> list[EvalItem]:
    try:
        records = json.loads(path.read_text())
    except ValueError as e:
        raise DatasetError(f"{path}: not JSON ({e})") from e
    items = []
    for i, rec in enumerate(records):
        try:
            choices = [str(c) for c in rec["Answer choices"]]
            items.append(
                EvalItem(
                    item_id=str(rec["Question_id"]),
                    question=str(rec["Text"]),
                    options=tuple(_strip_letter(c) for c in choices),
                    answer_index=_letter_index(str(rec["Ground truth"]), len(choices), f"{path} record {i}"),
                    category=str(rec["Category"]),
                    image_path=path.parent / str(rec["Image"]),
                    extra={
                        "task": str(rec["Task"]),
                        "subtask": str(rec["Subtask"]),
                        "question_type": str(rec.get("Question Type", "")),
                        "raw_options": json.dumps(choices),
                    },
                )
            )
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{path}: record {i} lacks field {e}") from e
    return items


# ---------------------------------------------------------------------------------------------------- synthetic


def load_synthetic(seed: int, n: int, out_dir: Path, *, shuffle_seed: int | None) -> list[EvalItem]:
    """The synthetic split ``benchmark_items(seed, n)`` written in V*Bench per-image format under ``out_dir``."""
    from focus_tool.data.synthetic import benchmark_items, write_vstar

    folder = out_dir / f"synthetic_seed{seed}_n{n}"
    if not (folder / "done").is_file():
        write_vstar(benchmark_items(seed, n), folder)
        (folder / "done").write_text("ok\n")
    items = load_vstar(folder, shuffle_seed=shuffle_seed)
    order = {f"synth_{seed}_{i:04d}": i for i in range(n)}
    return sorted(items, key=lambda it: order.get(it.item_id.split("/")[-1], 1 << 30))
