"""Per-method options: ``--method-option KEY=VALUE`` parsed by each method's own class, and the run signature that
records them (old sidecars, which named four options as top-level keys, still resume under equal settings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.errors import FocusError
from focus_tool.eval import runner
from focus_tool.eval.methods import FocusOptions, ViCropOptions, ZoomEyeOptions
from focus_tool.eval.runner import EvalSpec, run_eval, signature_path
from focus_tool.methods import NoOptions, changed_options, method_spec, parse_method_options
from tests.tiny_models import tiny_llava


@pytest.fixture(scope="module")
def adapter() -> LlavaAdapter:
    return LlavaAdapter(*tiny_llava(seed=0, attn="eager"))


@pytest.mark.parametrize(
    ("method", "pairs", "expected"),
    [
        ("focus", [], FocusOptions()),
        ("focus", ["pipeline=paper"], FocusOptions(pipeline="paper")),
        ("zoomeye", ["depth=2"], ZoomEyeOptions(depth=2)),
        ("zoomeye", ["depth=none"], ZoomEyeOptions(depth=None)),
        ("vicrop", ["variant=grad-att", "high=true"], ViCropOptions(variant="grad-att", high=True)),
        ("vicrop", ["high=yes", "high=0"], ViCropOptions(high=False)),  # the last one wins
        ("vanilla", [], NoOptions()),
    ],
)
def test_options_are_parsed_by_the_field_types(method: str, pairs: list[str], expected: Any) -> None:
    assert parse_method_options(method, pairs) == expected


@pytest.mark.parametrize(
    ("method", "pair", "message"),
    [
        ("zoomeye", "dept=2", r"method 'zoomeye' takes KEY=VALUE, its options: depth \(int or none, default None\)"),
        ("zoomeye", "depth=two", r"zoomeye's depth takes int or none, got 'two'"),
        ("vicrop", "variant=att", r"vicrop's variant takes rel-att\|grad-att, got 'att'"),
        ("vicrop", "high=maybe", r"vicrop's high takes bool"),
        ("focus", "pipeline=fast", r"unknown pipeline 'fast'; choose one of: preset, paper, lean"),
        ("vanilla", "depth=2", r"its options: none"),
        ("nomethod", "a=1", r"unknown method 'nomethod'"),
    ],
)
def test_bad_options_name_the_valid_ones(method: str, pair: str, message: str) -> None:
    with pytest.raises(FocusError, match=message):
        parse_method_options(method, [pair])


def test_changed_options_are_the_non_defaults() -> None:
    assert changed_options(ViCropOptions()) == {}
    assert changed_options(ViCropOptions(high=True)) == {"high": True}
    assert method_spec("zoomeye").default_options() == ZoomEyeOptions()


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["--method", "focus", "--pipeline", "paper", "--scheme", "logit"], "focus_synthetic_paper_logit.json"),
        (["--method", "focus", "--method-option", "pipeline=lean"], "focus_synthetic_lean.json"),
        (["--method", "zoomeye", "--method-option", "depth=2", "--limit", "4"], "zoomeye_synthetic_n4_depth2.json"),
        (
            ["--method", "vicrop", "--method-option", "variant=grad-att", "--method-option", "high=true"],
            "vicrop_synthetic_grad-att_high.json",
        ),
        (["--method", "vicrop", "--method-option", "high=false"], "vicrop_synthetic.json"),  # the default: no part
    ],
)
def test_default_report_names_the_changed_options(args: list[str], name: str) -> None:
    from focus_tool.cli import build_parser
    from focus_tool.cli_eval import default_report

    assert default_report(build_parser().parse_args(["eval", "--benchmark", "synthetic", *args])) == Path(
        "focus-eval", name
    )


def test_pipeline_is_an_option_of_focus_alone() -> None:
    from focus_tool.cli import build_parser
    from focus_tool.cli_eval import eval_method_options

    parsed = build_parser().parse_args(["eval", "--method", "focus", "--benchmark", "synthetic", "--pipeline", "lean"])
    assert eval_method_options(parsed) == FocusOptions(pipeline="lean")
    parsed = build_parser().parse_args(
        ["eval", "--method", "vanilla", "--benchmark", "synthetic", "--pipeline", "lean"]
    )
    with pytest.raises(FocusError, match=r"method 'vanilla' takes KEY=VALUE, its options: none"):
        eval_method_options(parsed)


def _spec(tmp_path: Path, **kw: Any) -> EvalSpec:
    base: dict[str, Any] = {
        "methods": ("vanilla",),
        "benchmark": "synthetic",
        "data": tmp_path / "data",
        "report": tmp_path / "out" / "report.json",
        "limit": 1,
        "progress": False,
    }
    return EvalSpec(**{**base, **kw})


def test_default_signature_records_no_options(tmp_path: Path, adapter: LlavaAdapter) -> None:
    run_eval(_spec(tmp_path), adapter=adapter)
    stored = json.loads(signature_path(tmp_path / "out" / "report.json").read_text())
    keys = {"model", "model_weights", "benchmark", "data", "seed", "limit", "scheme", "dtype", "method_options"}
    assert set(stored) == keys
    assert stored["method_options"] == {}


def _as_old_sidecar(report: Path, **legacy: Any) -> None:
    """Rewrite the sidecar as focus-tool wrote it before method options: four options as top-level keys."""
    stored = json.loads(signature_path(report).read_text())
    stored.pop("method_options")
    stored.update({"zoomeye_depth": None, "vicrop_variant": "rel-att", "vicrop_high": False, **legacy})
    signature_path(report).write_text(json.dumps(stored, indent=1) + "\n")


@pytest.mark.parametrize(
    ("legacy", "methods", "options"),
    [
        ({}, ("vanilla",), {}),  # a default run
        ({"pipeline": "paper"}, ("vanilla", "focus"), {"focus": FocusOptions(pipeline="paper")}),
        ({"zoomeye_depth": 1}, ("vanilla", "zoomeye"), {"zoomeye": ZoomEyeOptions(depth=1)}),
    ],
    ids=["default", "pipeline", "zoomeye-depth"],
)
def test_an_old_sidecar_resumes_under_equal_settings(
    tmp_path: Path,
    adapter: LlavaAdapter,
    monkeypatch: pytest.MonkeyPatch,
    legacy: dict[str, Any],
    methods: tuple[str, ...],
    options: dict[str, Any],
) -> None:
    report = tmp_path / "out" / "report.json"
    run_eval(_spec(tmp_path, methods=methods, method_options=options), adapter=adapter)
    _as_old_sidecar(report, **legacy)
    calls: list[str] = []
    real = runner.run_item
    monkeypatch.setattr(
        runner, "run_item", lambda method, item, **kw: calls.append(method.name) or real(method, item, **kw)
    )
    assert run_eval(_spec(tmp_path, methods=methods, method_options=options), adapter=adapter) is not None
    assert calls == []  # everything resumed
    with pytest.raises(FocusError, match=r"changed: method_options "):
        high = {"vicrop": ViCropOptions(high=True)}
        run_eval(_spec(tmp_path, methods=("vanilla", "vicrop"), method_options=high), adapter=adapter)


def test_options_of_a_method_the_run_lacks_are_refused(tmp_path: Path, adapter: LlavaAdapter) -> None:
    spec = _spec(tmp_path, method_options={"zoomeye": ZoomEyeOptions(depth=2)})
    with pytest.raises(FocusError, match=r"options given for zoomeye, which the run does not have \(vanilla\)"):
        run_eval(spec, adapter=adapter)
    with pytest.raises(FocusError, match=r"method 'zoomeye' takes ZoomEyeOptions options, got ViCropOptions"):
        run_eval(_spec(tmp_path, methods=("zoomeye",), method_options={"zoomeye": ViCropOptions()}), adapter=adapter)
