"""The eval runner: report fields, resume, the V* logit scheme, and a 2-process torchrun run equal to 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.errors import ConfigError, FocusError
from focus_tool.eval import runner
from focus_tool.eval.accounting import tflops
from focus_tool.eval.methods import ViCropOptions, ZoomEyeOptions
from focus_tool.eval.runner import EvalSpec, items_path, run_eval, signature_path, weights_fingerprint
from tests.tiny_models import save_tiny_llava, tiny_llava

ROOT = Path(__file__).resolve().parent.parent.parent
FIX = ROOT / "tests" / "fixtures"
KEYS = {
    "accuracy",
    "search_fps_mean",
    "answer_fps_mean",
    "prefill_tokens_mean",
    "wall_s_mean",
    "peak_mem_mb",
    "n",
    "answer_scheme",
    "tflops_mean",
}


@pytest.fixture(scope="module")
def adapter() -> LlavaAdapter:
    return LlavaAdapter(*tiny_llava(seed=0, attn="eager"))


def _spec(tmp_path: Path, **kw: Any) -> EvalSpec:
    base: dict[str, Any] = {
        "methods": ("vanilla",),
        "benchmark": "synthetic",
        "data": tmp_path / "data",
        "report": tmp_path / "out" / "report.json",
        "limit": 2,
        "progress": False,
    }
    base.update(kw)
    return EvalSpec(**base)


def test_report_fields_and_files(tmp_path: Path, adapter: LlavaAdapter) -> None:
    report = run_eval(_spec(tmp_path, methods=("vanilla", "zoomeye", "vicrop", "focus")), adapter=adapter)
    assert report is not None and set(report["methods"]) == {"vanilla", "zoomeye", "vicrop", "focus"}
    for m in report["methods"].values():
        assert set(m) >= KEYS and m["n"] == 2 and m["answer_scheme"] == "letter-lenient"
    assert report["methods"]["vicrop"]["search_fps_mean"] == 2.0  # rel-att: question + generic prompt
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "report.png", "report.items.jsonl"}
    assert "letter-lenient" in (out / "report.md").read_text()
    assert not list(out.glob("*.rank*.jsonl"))  # shards merged


def test_resume_skips_done_items(tmp_path: Path, adapter: LlavaAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_items(monkeypatch, lambda _method, item: item.item_id)
    run_eval(_spec(tmp_path, limit=3), adapter=adapter)
    assert len(calls) == 3
    path = items_path(tmp_path / "out" / "report.json")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # an interrupted run: a torn last line
    calls.clear()
    report = run_eval(_spec(tmp_path, limit=3), adapter=adapter)
    assert len(calls) == 1 and report is not None and report["methods"]["vanilla"]["n"] == 3
    calls.clear()
    run_eval(_spec(tmp_path, limit=3), adapter=adapter)
    assert calls == []


def _count_items(
    monkeypatch: pytest.MonkeyPatch, key: Callable[[Any, Any], str] = lambda method, _item: method.name
) -> list[str]:
    """Patch ``run_item`` to log ``key(method, item)`` (default: the method's name) of every item actually run."""
    calls: list[str] = []
    real = runner.run_item

    def counting(method: Any, item: Any, **kw: Any) -> dict[str, Any]:
        calls.append(key(method, item))
        return real(method, item, **kw)

    monkeypatch.setattr(runner, "run_item", counting)
    return calls


@pytest.mark.parametrize(
    ("change", "runs"),
    [
        ({}, []),  # the same run again: everything is done
        ({"methods": ("vanilla", "focus")}, ["focus"]),  # adding a method is not a change of run
        ({"progress": True, "command": "focus eval ..."}, []),  # nor is how the run is shown
    ],
    ids=["same", "added-method", "display-only"],
)
def test_same_run_signature_resumes(
    tmp_path: Path,
    adapter: LlavaAdapter,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, Any],
    runs: list[str],
) -> None:
    calls = _count_items(monkeypatch)
    run_eval(_spec(tmp_path, limit=1), adapter=adapter)
    assert calls == ["vanilla"]
    stored = json.loads(signature_path(tmp_path / "out" / "report.json").read_text())
    assert stored["model"] == "llava" and stored["scheme"] == "letter-lenient" and stored["limit"] == 1
    calls.clear()
    report = run_eval(_spec(tmp_path, limit=1, **change), adapter=adapter)
    assert calls == runs and report is not None
    assert set(report["methods"]) == set(change.get("methods", ("vanilla",)))


_REFUSED: list[tuple[dict[str, Any], str]] = [  # (what the rerun changes, the field the refusal names)
    ({"scheme": "logit"}, "scheme"),
    ({"seed": 1}, "seed"),
    ({"limit": 2}, "limit"),
    ({"model_id": "another-llava"}, "model"),
    ({"data": "other-data"}, "data"),
    ({"methods": ("vanilla", "zoomeye"), "method_options": {"zoomeye": ZoomEyeOptions(depth=2)}}, "method_options"),
    ({"methods": ("vicrop",), "method_options": {"vicrop": ViCropOptions(variant="grad-att")}}, "method_options"),
    ({"methods": ("vicrop",), "method_options": {"vicrop": ViCropOptions(high=True)}}, "method_options"),
]


_REFUSED_IDS = ["scheme", "seed", "limit", "model", "data", "zoomeye-depth", "vicrop-variant", "vicrop-high"]


@pytest.mark.parametrize(("change", "field"), _REFUSED, ids=_REFUSED_IDS)
def test_changed_run_signature_is_refused(
    tmp_path: Path, adapter: LlavaAdapter, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], field: str
) -> None:
    """Records of another model / settings are never mixed in; a fresh report path, or deleting the items, works."""
    calls = _count_items(monkeypatch)
    run_eval(_spec(tmp_path, limit=1), adapter=adapter)
    report = tmp_path / "out" / "report.json"
    before = items_path(report).read_text()
    change = dict(change)
    if "model_id" in change:
        monkeypatch.setattr(adapter, "model_id", change.pop("model_id"))
    if "data" in change:
        change["data"] = tmp_path / change["data"]
    calls.clear()
    refused = rf"different run \(changed: {field} .* -> .*\); delete .*report\.items\.jsonl"
    with pytest.raises(FocusError, match=refused):
        run_eval(_spec(tmp_path, **{"limit": 1, **change}), adapter=adapter)
    assert calls == [] and items_path(report).read_text() == before  # refused before anything ran
    fresh = tmp_path / "fresh" / "report.json"
    assert run_eval(_spec(tmp_path, **{"limit": 1, "report": fresh, **change}), adapter=adapter) is not None
    items_path(report).unlink()  # the other way out the message names
    assert run_eval(_spec(tmp_path, **{"limit": 1, **change}), adapter=adapter) is not None
    assert json.loads(signature_path(report).read_text()) == json.loads(signature_path(fresh).read_text())


def test_records_without_run_signature_are_refused(tmp_path: Path, adapter: LlavaAdapter) -> None:
    """Items files of an older focus-tool (no sidecar) cannot be told apart from another run's: refused as well."""
    run_eval(_spec(tmp_path, limit=1), adapter=adapter)
    signature_path(tmp_path / "out" / "report.json").unlink()
    with pytest.raises(FocusError, match=r"without a readable run signature report\.run\.json; delete "):
        run_eval(_spec(tmp_path, limit=1), adapter=adapter)


def test_weights_fingerprint_reads_content_not_paths(tmp_path: Path) -> None:
    """Equal across clones (other folder, other mtime); changed by new bytes at either end or a new focus_preset."""
    head, middle, tail = b"h" * 2**20, b"m" * 2**20, b"t" * 2**20
    for clone in ("a", "b"):
        (tmp_path / clone).mkdir()
        (tmp_path / clone / "model.safetensors").write_bytes(head + middle + tail)
    os.utime(tmp_path / "b" / "model.safetensors", (0, 0))
    base = weights_fingerprint(tmp_path / "a")
    assert base is not None and weights_fingerprint(tmp_path / "b") == base
    assert weights_fingerprint(tmp_path) is None  # no weight files
    (tmp_path / "b" / "model.safetensors").write_bytes(head + middle + b"T" + tail[1:])
    assert weights_fingerprint(tmp_path / "b") != base
    (tmp_path / "a" / "focus_preset.json").write_text('{"preset": "default"}')
    assert weights_fingerprint(tmp_path / "a") != base


def test_logit_scheme_on_vstar_fixture(tmp_path: Path, adapter: LlavaAdapter) -> None:
    spec = _spec(
        tmp_path, benchmark="vstar", data=FIX / "vstar", scheme="logit", limit=None, methods=("vanilla", "zoomeye")
    )
    report = run_eval(spec, adapter=adapter)
    assert report is not None and report["answer_scheme"] == "logit" and report["options_order"] == "as stored"
    records = [json.loads(x) for x in items_path(spec.report).read_text().splitlines()]
    vanilla = [r for r in records if r["method"] == "vanilla"]
    assert [r["answer_fps"] for r in vanilla] == [4, 2]  # one pass per option sentence
    assert all(r["answer"] == "A" for r in vanilla)  # stored order: the first option is correct


def test_focus_logit_scheme_spends_exactly_the_option_passes(
    tmp_path: Path, adapter: LlavaAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline is configured with scheme="logit": no free-form answer is generated and thrown away."""
    phases: list[str] = []
    real = adapter.generate

    def spy(image: Any, text: str, *, max_new_tokens: int) -> str:
        phases.append(adapter.counter.phase)
        return real(image, text, max_new_tokens=max_new_tokens)

    monkeypatch.setattr(adapter, "generate", spy)
    spec = _spec(tmp_path, benchmark="vstar", data=FIX / "vstar", scheme="logit", limit=None, methods=("focus",))
    report = run_eval(spec, adapter=adapter)
    assert report is not None and report["methods"]["focus"]["answer_scheme"] == "logit"
    records = [json.loads(x) for x in items_path(spec.report).read_text().splitlines()]
    assert [r["answer_fps"] for r in records] == [4, 2]  # one pass per option sentence, nothing else
    assert phases == ["extraction", "extraction"]  # target extraction only; no answer-phase generate
    assert all(r["pred"] for r in records)  # every reply is one of the option texts


def test_focus_scheme_reaches_the_pipeline(adapter: LlavaAdapter) -> None:
    method = runner.build_method("focus", adapter)
    image = Image.new("RGB", (64, 48), "white")
    options = ["black", "white", "cyan"]
    letter = method.run(image, question="What is the color?", options=options, scheme="letter", suffix="Letter.")
    logit = method.run(image, question="What is the color?", options=options, scheme="logit", suffix="Letter.")
    assert letter.forward_passes.answer == 1
    assert logit.forward_passes.answer == 3 and logit.answer in options
    assert method.config.answer.scheme == "letter"  # the method's base config is not mutated
    with pytest.raises(ValueError, match="needs options"):
        method.run(image, question="What is the color?", options=None, scheme="logit")


def test_build_method_reads_the_checkpoints_zoomeye_section(
    tmp_path: Path, adapter: LlavaAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``"zoomeye"`` section of the checkpoint's focus_preset.json reaches the runner's ZoomEye; depth still set."""
    spec = {"preset": "default", "zoomeye": {"cues": "focus_extraction", "prompts": {"latent": "Is there a {target}?"}}}
    (tmp_path / "focus_preset.json").write_text(json.dumps(spec))
    monkeypatch.setattr(adapter, "model_id", str(tmp_path))
    method = runner.build_method("zoomeye", adapter, ZoomEyeOptions(depth=2))
    cfg = method.config  # type: ignore[attr-defined]
    assert cfg.cues == "focus_extraction" and cfg.prompts.latent == "Is there a {target}?" and cfg.depth_limit == 2
    (tmp_path / "focus_preset.json").write_text(json.dumps({"zoomeye": {"cues": "focus"}}))
    with pytest.raises(ConfigError, match="cues"):
        runner.build_method("zoomeye", adapter)


class _AlwaysA:
    """A method that records each call and answers "A" (letter scheme)."""

    name = "focus"

    def __init__(self) -> None:
        from focus_tool.adapters.base import ForwardCounter

        self.adapter = SimpleNamespace(counter=ForwardCounter(), model_id="always-a", lm_dims=None)
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def run(self, image: Image.Image, *, question: str, options: Any, scheme: str = "letter", suffix: str = "") -> Any:
        from focus_tool.result import FocusResult, ForwardPasses

        self.calls.append((question, tuple(options)))
        self.adapter.counter.reset()
        with self.adapter.counter.in_phase("search"):
            self.adapter.counter.add(3, 30)  # a search of 3 passes, once per call
        return FocusResult(
            method="focus", model_id="always-a", image_wh=image.size, question=question, answer="A",
            forward_passes=ForwardPasses(search=3, answer=1, extraction=0), prefill_tokens=30,
        )  # fmt: skip


def test_hrbench_cyclic_rows_are_searched_one_by_one_and_scored_officially(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first two fixture rows: one question in two cyclic option orders (cyc0: answer A, cyc1: answer D). Each row
    is its own item: the method (search included) runs once per row, nothing is shared. An always-"A" model is right
    in cyc0 only: per-group accuracies 1.0 and 0.0, averaged over the 2 groups = 0.5 (VLMEvalKit report_acc_hrbench).
    """
    method = _AlwaysA()
    monkeypatch.setattr(runner, "build_method", lambda name, adapter, options=None: method)
    spec = _spec(tmp_path, benchmark="hrbench4k", data=FIX / "hrbench" / "hr_bench_4k.tsv", limit=2, methods=("focus",))
    report = run_eval(spec, adapter=method.adapter)  # type: ignore[arg-type]
    assert method.calls == [
        ("What color is the small card?", ("red", "green", "blue", "yellow")),
        ("What color is the small card?", ("green", "blue", "yellow", "red")),
    ]
    records = [json.loads(x) for x in items_path(spec.report).read_text().splitlines()]
    assert [(r["item_id"], r["extra"]["cycle_category"], r["answer"], r["correct"]) for r in records] == [
        ("0", "cyc0", "A", True),
        ("1", "cyc1", "D", False),
    ]
    assert [r["search_fps"] for r in records] == [3, 3]  # one search per row
    assert report is not None
    focus = report["methods"]["focus"]
    assert focus["accuracy"] == pytest.approx(0.5) and focus["search_fps_mean"] == 3.0
    assert focus["breakdown"]["per_cycle"] == {"cyc0": 1.0, "cyc1": 0.0}
    assert focus["breakdown"]["per_category"] == {"single": pytest.approx(0.5)}


def test_tflops_formula() -> None:
    # L=2, d=4, m=8; one call of 2 sequences x 10 tokens: 2 * 2 * (4*10*16 + 2*100*4 + 2*10*4*8) = 8320 MACs
    assert tflops([(2, 20)], (2, 4, 8)) == pytest.approx(8320 / 1e12)


def _strip(report: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in report.items() if k not in ("world_size", "command")}
    out["methods"] = {
        n: {k: v for k, v in m.items() if k not in ("wall_s_mean", "peak_mem_mb")} for n, m in report["methods"].items()
    }
    return out


def _records(report: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in items_path(report).read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("wall_s", "peak_mem_mb")} for r in rows]


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(tmp_path: Path) -> None:
    model = save_tiny_llava(tmp_path / "tiny")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    common = [
        "eval",
        "--method",
        "focus",
        "--model",
        str(model),
        "--benchmark",
        "synthetic",
        "--limit",
        "6",
        "--seed",
        "3",
        "--no-progress",
    ]
    one = tmp_path / "one" / "report.json"
    two = tmp_path / "two" / "report.json"
    subprocess.run(
        [sys.executable, "-m", "focus_tool.cli", *common, "--report", str(one), "--data", str(tmp_path / "d1")],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run(
        [*torchrun, "-m", "focus_tool.cli", *common, "--report", str(two), "--data", str(tmp_path / "d2")],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    r1, r2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert r2["world_size"] == 2 and r1["world_size"] == 1
    assert _records(one) == _records(two) and len(_records(one)) == 6
    s1, s2 = _strip(r1), _strip(r2)
    s1.pop("data"), s2.pop("data")
    assert s1 == s2
    # another seed on the 2-process report: every rank refuses up front (none is left waiting at a barrier)
    common[common.index("--seed") + 1] = "4"
    refused = subprocess.run(
        [*torchrun, "-m", "focus_tool.cli", *common, "--report", str(two), "--data", str(tmp_path / "d2")],
        env=env,
        cwd=tmp_path,
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and refused.stderr.count("focus: error:") == 2
    assert "different run (changed: seed 3 -> 4); delete " in refused.stderr
