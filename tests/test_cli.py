"""The ``focus`` command line, run as a subprocess: help, a good run, and every bad input (exit 2, one line)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focus_tool.inputs import load_image
from focus_tool.render import overlay
from focus_tool.result import FocusResult
from tests.bad_inputs import write_huge_header_png, write_png, write_text_as_png, write_truncated_png

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
}  # the package is importable from any cwd


def focus(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "focus_tool.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import save_tiny_llava

    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava-cli"))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_png(tmp_path_factory.mktemp("img") / "scene.png", (96, 64))


# ---------------------------------------------------------------- help


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--help"], ["zoom", "demo"]),
        (["zoom", "--help"], ["--question", "--target", "--overlay", "--json", "--model"]),
    ],
)
def test_help(args: list[str], expected: list[str]) -> None:
    p = focus(*args)
    assert p.returncode == 0, p.stderr
    for word in expected:
        assert word in p.stdout
    assert "Traceback" not in p.stderr


# ---------------------------------------------------------------- bad input


def _missing(t: Path) -> Path:
    return t / "nope.png"


def _directory(t: Path) -> Path:
    d = t / "adir"
    d.mkdir(exist_ok=True)
    return d


BadImage = Callable[[Path], Path]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_missing, ["not found", "nope.png"]),  # missing file
        (_directory, ["adir", "is not a file"]),  # a directory
        (lambda t: write_text_as_png(t / "text.png"), ["text.png", "not a supported image"]),  # text with a .png name
        (lambda t: write_truncated_png(t / "cut.png"), ["cut.png", "truncated"]),  # truncated PNG
        (lambda t: write_png(t / "small.png", (10, 10)), ["10x10", "at least 32"]),  # below the minimum size
        (lambda t: write_huge_header_png(t / "huge.png"), ["huge.png", "pixels", "resize it"]),  # header 1e5 x 1e5
    ],
)
def test_bad_image(tmp_path: Path, tiny: Path, make: BadImage, words: list[str]) -> None:
    p = focus("zoom", make(tmp_path), "--target", "red card", "--model", tiny)
    _assert_clean_error(p, words)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--question", ""], ["question is empty"]),  # empty question
        (["--question", "   "], ["question is empty"]),  # whitespace-only question
        (["--target", "   "], ["target is empty"]),  # whitespace-only target
        (["--target", "zebra"], ["zebra", "vocabulary"]),  # a word the tiny model's tokenizer does not know
        (["--target", "red card", "--overlay", "out.jpg"], ["--overlay", ".png", "out.jpg"]),  # not a PNG name
        ([], ["--question", "--target"]),  # neither question nor target
    ],
)
def test_bad_text_or_option(tmp_path: Path, tiny: Path, image: Path, args: list[str], words: list[str]) -> None:
    p = focus("zoom", image, *args, "--model", tiny, cwd=tmp_path)
    _assert_clean_error(p, words)
    assert not (tmp_path / "out.jpg").exists()


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("/no/such/model/dir", ["/no/such/model/dir", "does not exist"]),  # missing folder
        ("nobody-xyz/no-such-model-xyz", ["nobody-xyz/no-such-model-xyz", "hub id"]),  # uncached hub id, offline
    ],
)
def test_bad_model(image: Path, model: str, words: list[str]) -> None:
    p = focus("zoom", image, "--target", "red card", "--model", model)
    _assert_clean_error(p, words)


def test_model_folder_without_config(tmp_path: Path, image: Path) -> None:
    p = focus("zoom", image, "--target", "red card", "--model", tmp_path)
    _assert_clean_error(p, ["config.json"])


def _assert_clean_error(p: subprocess.CompletedProcess[str], words: list[str]) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stderr.startswith("focus: error:"), p.stderr
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    assert p.stderr.count("\n") == 1, p.stderr  # one line
    for word in words:
        assert word in p.stderr, (word, p.stderr)
    assert p.stdout == ""


# ---------------------------------------------------------------- a good run


def test_zoom_json_and_overlay(tmp_path: Path, tiny: Path, image: Path) -> None:
    out = tmp_path / "sub" / "out.png"
    p = focus("zoom", image, "--target", "red card", "--model", tiny, "--json", "--overlay", out)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    result = FocusResult.model_validate_json(p.stdout)
    with Image.open(image) as im:
        w, h = im.size
    assert result.image_wh == (w, h)
    assert result.targets == ["red card"] and result.target_types == ["single"]
    assert result.question is None and result.answer is None and result.answer_view == "none"
    assert len(result.regions) >= 1
    for r in result.regions:
        x0, y0, x1, y1 = r.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, r.box
        assert r.confidence is None or 0.0 <= r.confidence <= 1.0
    assert [r.rank for r in result.regions] == list(range(1, len(result.regions) + 1))
    assert len({r.id for r in result.regions}) == len(result.regions)
    selected = [r for r in result.regions if r.selected]
    assert len(selected) == 1  # type-1, one target: one winner

    assert out.is_file()
    with Image.open(out) as f:
        written = f.convert("RGB")
    assert written.size[0] >= w and written.size[1] >= h  # the image at the top left; a legend margin may follow

    # the boxes are drawn where the JSON says: same picture when re-rendered from the JSON result ...
    img = load_image(image)
    rendered = overlay(img, result)
    assert np.array_equal(np.asarray(written), np.asarray(rendered))
    # ... and along the selected box's top edge the pixels differ from an overlay without regions
    bare = np.asarray(overlay(img, result.model_copy(update={"regions": []})))
    x0, y0, x1, _ = selected[0].box
    drawn = np.asarray(rendered)
    assert (drawn[y0, x0:x1] != bare[y0, x0:x1]).any(axis=-1).all()
    # and the bottom edge row is drawn too (outline inside the box, last row y1 - 1)
    y1 = selected[0].box[3]
    assert (drawn[y1 - 1, x0:x1] != bare[y1 - 1, x0:x1]).any(axis=-1).all()


def test_zoom_text_output(tiny: Path, image: Path) -> None:
    p = focus("zoom", image, "--target", "red card", "--model", tiny, "--top", "2")
    assert p.returncode == 0, p.stderr
    assert "targets:  red card" in p.stdout
    assert "forward passes: search" in p.stdout
    assert "Traceback" not in p.stderr


def test_demo_runs_on_the_shipped_model(tmp_path: Path) -> None:
    """The README's main job: `focus demo` prints both answers and writes the image and the overlay."""
    proc = focus("demo", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for words in ("question:", "vanilla (whole image):", "FOCUS:", "search passes"):
        assert words in proc.stdout
    assert re.search(
        r"tally: +on the next 10 demo images \(seeds 1-10\): vanilla right \d+/10, FOCUS right \d+/10", proc.stdout
    )
    assert (tmp_path / "demo_0.png").is_file() and (tmp_path / "demo_0_overlay.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo_0.png",
        "demo_0_overlay.png",
    ]  # the tally writes nothing
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- defaults


def test_top_lists_n_regions_per_target(tmp_path: Path) -> None:
    """`--top 1` on a two-target question lists the best region of each target, not only of the first."""
    from focus_tool.data import synthetic as syn

    item = syn.sample_bench_item(np.random.default_rng([syn.DEMO_STREAM, 15]), "attribute")  # has red and blue cards
    path = tmp_path / "scene.png"
    syn.render(item.scene).save(path)
    question = "Is the red card on the left or right side of the blue card?"
    p = focus("zoom", path, "-q", question, "--top", "1")
    assert p.returncode == 0, p.stderr
    listed = re.findall(r"^ +\S+ (red card|blue card) +box=", p.stdout, re.M)
    assert sorted(listed) == ["blue card", "red card"], p.stdout


def test_eval_writes_to_a_default_ignored_folder(tmp_path: Path) -> None:
    """Without --report, `focus eval` writes focus-eval/<method>_<benchmark>_<settings>.json and says so."""
    p = focus("eval", "--method", "vanilla", "--benchmark", "synthetic", "--limit", "2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    report = Path("focus-eval") / "vanilla_synthetic_n2.json"
    assert (tmp_path / report).is_file() and (tmp_path / report.with_suffix(".md")).is_file()
    assert f"report {report}" in p.stdout
    ignored = subprocess.run(["git", "check-ignore", str(report)], cwd=REPO, capture_output=True, text=True)
    assert ignored.stdout.strip() == str(report), "focus-eval/ is not in .gitignore"


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ([], "focus_synthetic.json"),
        (["--limit", "40"], "focus_synthetic_n40.json"),
        (["--limit", "40", "--pipeline", "paper", "--seed", "1"], "focus_synthetic_n40_seed1_paper.json"),
        (["--model", "/ckpts/my model/"], "focus_synthetic_my-model.json"),  # the folder's name, spaces to '-'
        (["--scheme", "logit", "--report", "r/x.json"], None),  # --report given: no default
    ],
)
def test_default_report_names_the_settings(args: list[str], name: str | None) -> None:
    from focus_tool.cli import build_parser
    from focus_tool.cli_eval import default_report

    parsed = build_parser().parse_args(["eval", "--method", "focus", "--benchmark", "synthetic", *args])
    if name is None:
        assert parsed.report == Path("r/x.json")
    else:
        assert parsed.report is None and default_report(parsed) == Path("focus-eval") / name


@pytest.mark.parametrize(
    "command",
    [["zoom", "img.png", "-t", "red card"], ["eval", "--method", "focus", "--benchmark", "synthetic"], ["serve"]],
)
def test_device_defaults_to_auto(command: list[str]) -> None:
    from focus_tool.cli import build_parser

    assert build_parser().parse_args(command).device == "auto"


@pytest.mark.parametrize(
    ("name", "cuda", "mps", "expected"),
    [
        ("auto", True, True, "cuda"),  # a GPU first
        ("auto", False, True, "mps"),  # then Apple silicon
        ("auto", False, False, "cpu"),  # else the CPU
        ("cpu", True, True, "cpu"),  # asked for: as asked
        ("cuda", True, False, "cuda"),
        ("cuda", False, False, "--device cuda: PyTorch sees no CUDA GPU"),  # asked for but absent: one line
        ("mps", False, False, "--device mps: PyTorch sees no Apple MPS"),
        ("tpu", False, False, "device must be one of auto, cpu, cuda, mps, got 'tpu'"),
    ],
)
def test_resolve_device(monkeypatch: pytest.MonkeyPatch, name: str, cuda: bool, mps: bool, expected: str) -> None:
    import torch

    from focus_tool.devices import resolve_device
    from focus_tool.errors import FocusError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    if expected in ("cuda", "mps", "cpu"):
        assert resolve_device(name) == expected
    else:
        with pytest.raises(FocusError, match=re.escape(expected)):
            resolve_device(name)
