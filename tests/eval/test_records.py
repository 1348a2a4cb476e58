"""Per-item records and report entries written before the extraction phase was renamed (``aux``) still read."""

from __future__ import annotations

import json
from pathlib import Path

from focus_tool.eval.records import PHASES, ItemRecord, read_records
from focus_tool.eval.report import current_entry, markdown, summarize

ROOT = Path(__file__).resolve().parents[2]
COMPARE = ROOT / "benchmarks" / "results" / "compare" / "embedded_synthetic"  # committed with the old names


def test_committed_records_read_with_current_names() -> None:
    path = COMPARE.with_name(COMPARE.name + ".items.jsonl")
    lines = path.read_text().splitlines()
    records = read_records(path)
    assert len(records) == len(lines)  # no line skipped as malformed
    for line, r in zip(lines, records, strict=True):
        old = json.loads(line)
        assert r.extraction_fps == old["aux_fps"]
        assert r.phase_tokens is not None and set(r.phase_tokens) == set(PHASES)
        assert r.phase_tokens["extraction"] == old["phase_tokens"]["aux"]
    new = json.loads(records[0].to_line())
    assert "aux_fps" not in new and "aux" not in new["phase_tokens"]
    assert ItemRecord.model_validate_json(records[0].to_line()) == records[0]
    report = summarize(records, benchmark="synthetic", scheme="logit")
    assert {"extraction_fps_mean", "phase_tokens_mean"} <= set(report["focus"])
    assert set(report["focus"]["phase_tokens_mean"]) == set(PHASES)


def test_committed_report_entries_read_with_current_names() -> None:
    report = json.loads(COMPARE.with_suffix(".json").read_text())
    for name, entry in report["methods"].items():
        now = current_entry(entry)
        assert "aux_fps_mean" not in now and now["extraction_fps_mean"] == entry["aux_fps_mean"]
        assert list(now) == [k.replace("aux_", "extraction_") for k in entry], name  # renamed in place
    report["methods"] = {k: current_entry(v) for k, v in report["methods"].items()}
    assert "extraction FPs" in markdown(report)


def test_current_name_wins_over_old() -> None:
    entry = {"aux_fps_mean": 2.0, "extraction_fps_mean": 1.0, "phase_tokens_mean": {"aux": 5.0, "extraction": 3.0}}
    assert current_entry(entry) == {"extraction_fps_mean": 1.0, "phase_tokens_mean": {"extraction": 3.0}}
