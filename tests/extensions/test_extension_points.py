"""A backbone, methods and a benchmark, each in one file or one entry, added through the documented extension points.

tests/extensions/colour_backbone.py, tests/extensions/centre_crop_method.py and tests/extensions/margin_crop_method.py
(a method with an option of its own) are what a third party would write (docs/extending.md); they are loaded the way
the ``focus`` command loads installed plugins (entry points of the ``focus_tool.plugins`` group) and run through
``focus zoom`` and ``focus eval``. A benchmark is one :func:`~focus_tool.eval.benchmarks.register_benchmark` entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from focus_tool import cli
from focus_tool.adapters.registry import supported_model_types, unregister_backbone
from focus_tool.eval.benchmarks import BenchmarkSpec, LoadRequest, register_benchmark, unregister_benchmark
from focus_tool.eval.datasets import EvalItem, load_vstar
from focus_tool.methods import method_names, unregister_method
from focus_tool.plugins import GROUP, load_plugins
from focus_tool.presets import PRESETS, unregister_preset
from tests.extensions import centre_crop_method, colour_backbone, margin_crop_method

FIX = Path(__file__).resolve().parent.parent / "fixtures"

PLUGINS = [
    EntryPoint(name="colour", value="tests.extensions.colour_backbone:register", group=GROUP),
    EntryPoint(name="centre", value="tests.extensions.centre_crop_method:register", group=GROUP),
    EntryPoint(name="margin", value="tests.extensions.margin_crop_method:register", group=GROUP),
]


@pytest.fixture
def plugins() -> Iterator[None]:
    """The two plugins registered for one test, then removed (the registries are process-wide)."""
    load_plugins(PLUGINS)
    try:
        yield
    finally:
        unregister_method(centre_crop_method.NAME)
        unregister_method(margin_crop_method.NAME)
        unregister_backbone(colour_backbone.MODEL_TYPE)
        unregister_preset(colour_backbone.PRESET)
        load_plugins.__globals__["_LOADED"].clear()


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A checkpoint folder of the new architecture (its config.json names the model type)."""
    folder = tmp_path / "colour-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": colour_backbone.MODEL_TYPE}))
    return folder


def _card_image(path: Path) -> tuple[int, int, int, int]:
    """A 640 x 480 light image with one small red card; returns the card's box."""
    img = Image.new("RGB", (640, 480), (235, 235, 230))
    box = (448, 96, 496, 160)
    ImageDraw.Draw(img).rectangle(box, fill=colour_backbone.CARD_COLORS["red"])
    img.save(path)
    return box


def test_registered_through_entry_points(plugins: None) -> None:
    assert colour_backbone.MODEL_TYPE in supported_model_types()
    assert colour_backbone.PRESET in PRESETS
    assert centre_crop_method.NAME in method_names()


def test_unregistered_after(plugins: None) -> None:
    unregister_method(centre_crop_method.NAME)
    unregister_backbone(colour_backbone.MODEL_TYPE)
    assert centre_crop_method.NAME not in method_names()
    assert colour_backbone.MODEL_TYPE not in supported_model_types()


def test_focus_zoom_on_the_new_backbone(
    plugins: None, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "card.png"
    x0, y0, x1, y1 = _card_image(image)
    rc = cli.main(["zoom", str(image), "-t", "red card", "--model", str(checkpoint), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    result = json.loads(out.out)
    assert result["method"] == "focus"
    assert result["targets"] == ["red card"]
    bx0, by0, bx1, by1 = result["regions"][0]["box"]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert bx0 <= cx <= bx1 and by0 <= cy <= by1  # the best region holds the card
    assert result["status"]["targets"][0]["state"] == "found"


def test_focus_eval_runs_the_new_method_on_the_new_backbone(
    plugins: None, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "centre.json"
    argv = ["eval", "--method", centre_crop_method.NAME, "--benchmark", "synthetic", "--limit", "3"]
    rc = cli.main([*argv, "--model", str(checkpoint), "--report", str(report)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    data = json.loads(report.read_text())
    entry = data["methods"][centre_crop_method.NAME]
    assert entry["n"] == 3
    records = [json.loads(line) for line in report.with_name(report.stem + ".items.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == {centre_crop_method.NAME}


def test_unknown_method_is_one_error_line(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):  # argparse: not a registered choice
        cli.main(["eval", "--method", centre_crop_method.NAME, "--benchmark", "synthetic", "--model", str(checkpoint)])
    assert "invalid choice" in capsys.readouterr().err


def _items(report: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in report.with_name(report.stem + ".items.jsonl").read_text().splitlines()]


def test_a_method_option_reaches_the_method(
    plugins: None, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--method-option margin=0.25` is parsed by the method's own options class and reaches its factory."""
    report = tmp_path / "margin.json"
    argv = ["eval", "--method", margin_crop_method.NAME, "--method-option", "margin=0.25"]
    argv += ["--benchmark", "synthetic", "--limit", "2", "--model", str(checkpoint), "--report", str(report)]
    rc = cli.main(argv)
    assert rc == 0, capsys.readouterr().err
    records = _items(report)
    assert len(records) == 2
    for r in records:
        ((x0, y0, x1, y1),) = r["answer_boxes"]  # type: ignore[misc]
        assert x0 / (x0 + x1) == pytest.approx(0.25, abs=0.01) and y0 / (y0 + y1) == pytest.approx(0.25, abs=0.01)
    signature = json.loads(report.with_name("margin.run.json").read_text())
    assert signature["method_options"] == {margin_crop_method.NAME: {"margin": 0.25}}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("width=3", r"takes KEY=VALUE, its options: margin \(float, default 0\.1\)"),  # unknown key: the valid ones
        ("margin=wide", r"margin-crop's margin takes float, got 'wide'"),  # not a float
        ("margin", r"takes KEY=VALUE"),  # no '='
        ("margin=0.7", r"margin must be in \[0, 0\.5\), got 0\.7"),  # the options class's own check
    ],
)
def test_a_bad_method_option_is_one_error_line(
    plugins: None, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, message: str
) -> None:
    argv = ["eval", "--method", margin_crop_method.NAME, "--method-option", option, "--benchmark", "synthetic"]
    rc = cli.main([*argv, "--model", str(checkpoint), "--report", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("focus: error: "), err
    assert re.search(message, err), err
    assert not (tmp_path / "r.items.jsonl").exists()


def _first_vstar_item(req: LoadRequest) -> list[EvalItem]:
    return load_vstar(req.path, shuffle_seed=req.shuffle_seed)[:1]


def test_a_benchmark_is_one_table_entry(
    plugins: None, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One :class:`BenchmarkSpec` gives a ``--benchmark`` choice with its loader, prompt suffix, scheme and scorer."""
    suffix = "Reply with the letter alone."
    register_benchmark(BenchmarkSpec("vstar-one", _first_vstar_item, suffix, default_scheme="letter-strict"))
    prompts: list[str] = []
    real = colour_backbone.ColourAdapter.generate

    def spy(self: colour_backbone.ColourAdapter, image: Image.Image | None, text: str, *, max_new_tokens: int) -> str:
        prompts.append(text)
        return real(self, image, text, max_new_tokens=max_new_tokens)

    monkeypatch.setattr(colour_backbone.ColourAdapter, "generate", spy)
    report = tmp_path / "one.json"
    try:
        argv = ["eval", "--method", centre_crop_method.NAME, "--benchmark", "vstar-one", "--data", str(FIX / "vstar")]
        assert cli.main([*argv, "--model", str(checkpoint), "--report", str(report)]) == 0
    finally:
        unregister_benchmark("vstar-one")
    data = json.loads(report.read_text())
    assert data["benchmark"] == "vstar-one" and data["answer_scheme"] == "letter-strict"
    assert data["methods"][centre_crop_method.NAME]["n"] == 1 and len(_items(report)) == 1
    assert prompts and all(suffix in p for p in prompts)
