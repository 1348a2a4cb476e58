"""benchmarks/compare.py end to end on the embedded model: --scheme reaches every method, --out keeps the repo clean."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def _compare_main():  # benchmarks/ is not a package: load the script as a module
    spec = importlib.util.spec_from_file_location("compare", ROOT / "benchmarks" / "compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize(("scheme", "answer_fps"), [("logit", [4.0, 4.0]), ("letter-lenient", [1.0, 1.0])])
def test_compare_writes_to_out_and_passes_the_scheme(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scheme: str, answer_fps: list[float]
) -> None:
    argv = ["--model", str(ROOT / "focus_tool" / "embedded" / "model"), "--benchmark", "synthetic", "--limit", "1"]
    argv += ["--seed", "0", "--name", "smoke", "--scheme", scheme, "--methods", "vanilla,focus", "--out", str(tmp_path)]
    assert _compare_main()(argv) == 0
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["answer_scheme"] == scheme and set(report["methods"]) == {"vanilla", "focus"}
    assert [report["methods"][m]["answer_fps_mean"] for m in ("vanilla", "focus")] == answer_fps  # 4 options
    assert {p.name for p in tmp_path.iterdir()} >= {"smoke.json", "smoke.md", "smoke.png", "smoke.items.jsonl"}
    out = capsys.readouterr().out
    assert f"answer scheme: {scheme}" in out and "| method | n | accuracy (%) |" in out and "wall / vanilla" in out
