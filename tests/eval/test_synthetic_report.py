"""The synthetic benchmark's report on the embedded model: measurements and ablation rows (one question)."""

from __future__ import annotations

from pathlib import Path

from focus_tool.eval.synthetic import evaluate

MODEL = str(Path(__file__).resolve().parents[2] / "focus_tool" / "embedded" / "model")


def test_ablations_report_ranking_on_and_off_for_each_map(tmp_path: Path) -> None:
    s = evaluate(MODEL, n=1, seed=0, out=tmp_path, ablations=True)
    abl = s["ablations"]
    for name in ("no_ranking", "random_map", "random_map_no_ranking", "unclamped_map", "unclamped_map_no_ranking"):
        assert 0.0 <= abl[name]["accuracy"] <= 100.0
    # without ranking no existence pass is spent: one search prefill per target, whatever the map
    assert abl["no_ranking"]["search_fps_mean"] == abl["random_map_no_ranking"]["search_fps_mean"]
    assert abl["random_map_no_ranking"]["search_fps_mean"] < abl["random_map"]["search_fps_mean"]
    assert (tmp_path / "report.md").read_text().count("| ablation: ") == len(abl)


def test_unclamped_rows_only_when_the_preset_clamps(tmp_path: Path) -> None:
    s = evaluate(MODEL, n=1, seed=0, out=tmp_path, ablations=True, overrides={"relevance.clamp_similarity": False})
    assert "unclamped_map" not in s["ablations"] and "random_map_no_ranking" in s["ablations"]
