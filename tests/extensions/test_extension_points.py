"""A backbone and a method, each in one file, added through the documented extension points alone.

tests/extensions/colour_backbone.py and tests/extensions/centre_crop_method.py are what a third party would write
(docs/extending.md); they are loaded the way the ``focus`` command loads installed plugins (entry points of the
``focus_tool.plugins`` group) and run through ``focus zoom`` and ``focus eval``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from focus_tool import cli
from focus_tool.adapters.registry import supported_model_types, unregister_backbone
from focus_tool.methods import method_names, unregister_method
from focus_tool.plugins import GROUP, load_plugins
from focus_tool.presets import PRESETS, unregister_preset
from tests.extensions import centre_crop_method, colour_backbone

PLUGINS = [
    EntryPoint(name="colour", value="tests.extensions.colour_backbone:register", group=GROUP),
    EntryPoint(name="centre", value="tests.extensions.centre_crop_method:register", group=GROUP),
]


@pytest.fixture
def plugins() -> Iterator[None]:
    """The two plugins registered for one test, then removed (the registries are process-wide)."""
    load_plugins(PLUGINS)
    try:
        yield
    finally:
        unregister_method(centre_crop_method.NAME)
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
