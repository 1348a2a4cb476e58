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


# the embedded preset scores the 4 options on one prefill (answer.shared_prefix): 1 pass under logit, and its
# colour words are one token each, so the prefill's last logits score them with no continuation row; a letter
# reply is one generate pass
@pytest.mark.parametrize(
    ("scheme", "answer_fps", "continuations"), [("logit", [1.0, 1.0], 0.0), ("letter-lenient", [1.0, 1.0], 0.0)]
)
def test_compare_writes_to_out_and_passes_the_scheme(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scheme: str, answer_fps: list[float], continuations: float
) -> None:
    argv = ["--model", str(ROOT / "focus_tool" / "embedded" / "model"), "--benchmark", "synthetic", "--limit", "1"]
    argv += ["--seed", "0", "--name", "smoke", "--scheme", scheme, "--methods", "vanilla,focus", "--out", str(tmp_path)]
    assert _compare_main()(argv) == 0
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["answer_scheme"] == scheme and set(report["methods"]) == {"vanilla", "focus"}
    assert [report["methods"][m]["answer_fps_mean"] for m in ("vanilla", "focus")] == answer_fps
    assert [report["methods"][m]["phase_continuations_mean"]["answer"] for m in ("vanilla", "focus")] == [
        continuations
    ] * 2
    assert {p.name for p in tmp_path.iterdir()} >= {"smoke.json", "smoke.md", "smoke.png", "smoke.items.jsonl"}
    out = capsys.readouterr().out
    assert f"answer scheme: {scheme}" in out and "| method | n | accuracy (%) |" in out and "wall / vanilla" in out
