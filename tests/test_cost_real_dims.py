"""benchmarks/cost_real_dims.py: the count-to-seconds arithmetic (hand-worked, made-up t(n)) and a --quick smoke run.

Nothing here asserts a timing: the cost model is given, and the smoke run only checks what the report holds.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module() -> ModuleType:  # benchmarks/ is not a package: load the script as a module
    if "cost_real_dims" in sys.modules:
        return sys.modules["cost_real_dims"]
    spec = importlib.util.spec_from_file_location("cost_real_dims", ROOT / "benchmarks" / "cost_real_dims.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cost_real_dims"] = module
    spec.loader.exec_module(module)
    return module


# made-up per-layer cost t(n) = 1e-3 n + 1e-6 n^2 + 0.01 s, 10 layers, 0.5 s per image, 576 tokens per image
def _model(crd: ModuleType) -> object:
    return crd.CostModel(lm_layers=10, a=1e-3, b=1e-6, c=0.01, vision_s_per_image=0.5, image_tokens=576)


# a lean-style method with the per-phase fields: 2 search prefills with one image each, the 4 options scored as
# one 20-token continuation of the cached prefix (no image), one text-only target extraction
LEAN = {
    "accuracy": 0.9,
    "search_fps_mean": 2.0,
    "answer_fps_mean": 1.0,
    "extraction_fps_mean": 1.0,
    "prefill_tokens_mean": 520.0,
    "phase_tokens_mean": {"search": 400.0, "answer": 20.0, "extraction": 100.0},
    "phase_images_mean": {"search": 2.0, "answer": 0.0, "extraction": 0.0},
}
# the same method as a report written before the extraction phase was renamed (``aux``) has it
LEAN_OLD_KEYS = {
    **{k: v for k, v in LEAN.items() if k != "extraction_fps_mean"},
    "aux_fps_mean": 1.0,
    "phase_tokens_mean": {"search": 400.0, "answer": 20.0, "aux": 100.0},
    "phase_images_mean": {"search": 2.0, "answer": 0.0, "aux": 0.0},
}

# the committed compare report's vanilla and focus rows (benchmarks/results/compare/embedded_synthetic.json, old
# ``aux`` spelling)
OLD_VANILLA = {"search_fps_mean": 0.0, "answer_fps_mean": 3.5, "aux_fps_mean": 0.0, "prefill_tokens_mean": 563.2}
OLD_FOCUS = {"search_fps_mean": 6.23, "answer_fps_mean": 3.5, "aux_fps_mean": 1.0, "prefill_tokens_mean": 1703.61}


def test_measured_split_hand_worked() -> None:
    crd = _module()
    row = crd.method_seconds(LEAN, _model(crd))
    assert row["estimated_split"] is False
    s, a, x = (row["phases"][p] for p in ("search", "answer", "extraction"))
    # search: 400 - 2*144 + 2*576 = 1264 tokens, 632 per sequence; t = 0.632 + 0.399424 + 0.01 = 1.041424
    assert s["real_tokens"] == pytest.approx(1264.0)
    assert s["mean_n"] == pytest.approx(632.0)
    assert s["lm_s"] == pytest.approx(2 * 10 * 1.041424)  # 20.82848
    assert s["vision_s"] == pytest.approx(1.0)
    # answer: a 20-token continuation, no image: t = 0.02 + 0.0004 + 0.01 = 0.0304
    assert a["lm_s"] == pytest.approx(0.304) and a["vision_s"] == 0.0
    # extraction: 100 text tokens: t = 0.1 + 0.01 + 0.01 = 0.12
    assert x["lm_s"] == pytest.approx(1.2)
    assert row["total_s"] == pytest.approx(21.82848 + 0.304 + 1.2)  # 23.33248
    assert row["images"] == pytest.approx(2.0) and row["sequences"] == pytest.approx(4.0)


def test_old_phase_name_reads_the_same() -> None:
    crd = _module()
    assert crd.method_seconds(LEAN_OLD_KEYS, _model(crd)) == crd.method_seconds(LEAN, _model(crd))


def test_estimated_split_hand_worked() -> None:
    crd = _module()
    van = crd.method_seconds(OLD_VANILLA, _model(crd))
    assert van["estimated_split"] is True
    # 3.5 sequences, 3.5 images: 563.2 - 504 + 2016 = 2075.2 tokens, 592.914 per sequence
    assert van["phases"]["answer"]["real_tokens"] == pytest.approx(2075.2)
    t = 1e-3 * 592.9142857 + 1e-6 * 592.9142857**2 + 0.01  # 0.9544616
    assert van["total_s"] == pytest.approx(3.5 * 10 * t + 3.5 * 0.5, rel=1e-6)  # 35.15616
    assert van["total_s"] == pytest.approx(35.15616, abs=1e-4)
    foc = crd.method_seconds(OLD_FOCUS, _model(crd))
    c = foc["counts"]
    # tokens split by sequences: 1703.61 * 6.23 / 10.73, * 3.5 / 10.73, * 1 / 10.73; extraction has no image
    assert c["search"]["tokens"] == pytest.approx(989.14169, abs=1e-4)
    assert c["answer"]["tokens"] == pytest.approx(555.69758, abs=1e-4)
    assert c["extraction"]["tokens"] == pytest.approx(158.77074, abs=1e-4)
    assert (c["search"]["images"], c["answer"]["images"], c["extraction"]["images"]) == (6.23, 3.5, 0.0)
    assert foc["phases"]["search"]["real_tokens"] == pytest.approx(989.14169 + 6.23 * 432, abs=1e-4)
    assert foc["total_s"] == pytest.approx(99.21846, abs=1e-4)


def test_fit_recovers_a_quadratic() -> None:
    crd = _module()
    ns = [64, 256, 640, 1400]
    a, b, c = crd.fit_cost(ns, [2e-4 * n + 3e-8 * n * n + 0.05 for n in ns])
    assert (a, b, c) == pytest.approx((2e-4, 3e-8, 0.05), rel=1e-6)


@pytest.mark.parametrize(
    "seconds",
    [
        [1.0e-4, 3.0e-4, 2.0e-4, 1.0e-4],  # noise at the clock's resolution: the free fit dips below zero
        [0.5, 0.2, 0.1, 0.05],  # falling with length: only the constant term is admissible
    ],
)
def test_fit_stays_positive_on_noise(seconds: list[float]) -> None:
    crd = _module()
    ns = [64, 118, 256, 640]
    a, b, c = crd.fit_cost(ns, seconds)
    assert min(a, b, c) >= 0
    assert all(a * n + b * n * n + c > 0 for n in [0, *ns, 4 * ns[-1]])


def test_committed_fit_is_the_free_fit() -> None:
    """The committed report's points give a positive free fit, so the non-negative fallback leaves it as it was."""
    crd = _module()
    rep = json.loads((ROOT / "benchmarks" / "results" / "cost_real_dims" / "report.json").read_text())
    for b in rep["backbones"]:
        got = crd.fit_cost([p["n"] for p in b["lm_points"]], [p["layer_s"] for p in b["lm_points"]])
        assert got == pytest.approx(tuple(b["lm_fit"][k] for k in "abc"), rel=1e-9)


def test_committed_compare_report_converts() -> None:
    crd = _module()
    data = crd.load_report(ROOT / "benchmarks" / "results" / "compare" / "embedded_synthetic.json")
    rows = crd.costs_for_report(data, {"m": _model(crd)})["m"]
    assert {"vanilla", "focus", "vicrop", "zoomeye"} <= set(rows)
    assert rows["vanilla"]["total_s"] < rows["focus"]["total_s"] < rows["zoomeye"]["total_s"]


def test_bad_report_is_one_line(tmp_path: Path) -> None:
    crd = _module()
    bad = tmp_path / "bad.json"
    bad.write_text('{"no": "methods"}')
    with pytest.raises(SystemExit, match="no 'methods' table"):
        crd.load_report(bad)


def test_quick_smoke(tmp_path: Path) -> None:
    crd = _module()
    fixture = tmp_path / "lean.json"
    fixture.write_text(
        json.dumps({"benchmark": "synthetic", "command": "x", "methods": {"vanilla": OLD_VANILLA, "lean": LEAN}})
    )
    sidecar = tmp_path / "lean.run.json"  # what a results/*.json glob also matches: skipped, not an error
    sidecar.write_text('{"model": "m", "seed": 0}')
    out = tmp_path / "out"
    argv = [
        "--quick",
        "--repeats",
        "1",
        "--map-per-round",
        "1",
        "--layers-timed",
        "1",
        "--reports",
        str(fixture),
        str(sidecar),
        "--out",
        str(out),
    ]
    assert crd.main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    assert [b["backbone"]["name"] for b in rep["backbones"]] == ["tiny-llava", "tiny-qwen"]
    for b in rep["backbones"]:
        assert len(b["lm_points"]) == len(b["backbone"]["lm_lengths"])
        lo, hi = b["map"]["layers"]
        assert 0 <= lo < hi <= b["backbone"]["lm_layers"]  # the preset range falls back as config_for does
        assert math.isfinite(b["map"]["map_share"]) and b["map"]["map_share"] > 0
    assert len(rep["reports"]) == 1 and rep["skipped_inputs"] == [str(sidecar)]
    rows = rep["reports"][0]["seconds"]["tiny-llava"]
    assert rows["lean"]["estimated_split"] is False and rows["vanilla"]["estimated_split"] is True
    md = (out / "report.md").read_text()
    assert "estimated split" in md and "measured" in md and "--reports" in md


@pytest.mark.parametrize("preset_name", ["llava-1.5", "qwen2.5-vl"])
def test_fused_yardstick_equals_relevance_map(preset_name: str) -> None:
    import torch

    from focus_tool.presets import preset
    from focus_tool.steps.relevance import relevance_map

    crd = _module()
    cfg = preset(preset_name).relevance
    gen = torch.Generator().manual_seed(1)
    values = [torch.randn(4, 50, 16, generator=gen) for _ in range(3)]
    vis, tpos = list(range(2, 38)), [44, 45, 46]
    fused = crd.fused_map(values, tpos, vis, cfg)
    assert fused is not None
    assert abs(fused - relevance_map(values, tpos, vis, cfg)).max() < 1e-6
