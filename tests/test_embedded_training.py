"""The embedded model's training script: a few steps run, resume from the checkpoint, and the result loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.data import synthetic as syn
from focus_tool.embedded.build import EmbeddedArch
from focus_tool.embedded.data import (
    CARD_CLASSES,
    COUNT_CLASSES,
    IGNORE,
    PIP_CLASSES,
    SIDE_CLASSES,
    clutter_leanings,
    patch_labels,
    sample_example,
)
from focus_tool.embedded.losses import POS_MARGIN
from focus_tool.embedded.train import main, train
from focus_tool.machine import cpu_model
from tests.tiny_models import TINY

pytestmark = pytest.mark.slow


def test_training_smoke_and_resume(tmp_path: Path) -> None:
    # the last step is a second-stage step (binding and side examples)
    out = train(tmp_path, steps=3, stage2_steps=1, batch_size=4, threads=1, progress=False, ckpt_every=2, arch=TINY)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and np.isfinite(log[0]["loss"])
    adapter = LlavaAdapter.from_pretrained(out)
    assert adapter.side == TINY.image_size // TINY.patch_size
    # a rerun with more steps resumes at step 3 instead of starting over
    train(tmp_path, steps=4, stage2_steps=2, batch_size=4, threads=1, progress=False, ckpt_every=2, arch=TINY)
    steps = [json.loads(line)["step"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert steps == [0]  # step 3 is not a multiple of 10: nothing new logged, and step 0 was not redone
    import torch

    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 4
    # what besides the command decides the floats is written beside the log
    starts = [json.loads(line) for line in (tmp_path / "environment.jsonl").read_text().splitlines()]
    assert [e["start_step"] for e in starts] == [0, 3]  # the first start and the resume each leave a line
    env = starts[-1]
    assert env["torch"] == torch.__version__ and env["threads"] == 1
    assert env["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["cpu"] == cpu_model() and env["cpu"]


@pytest.mark.parametrize(("before", "after"), [(None, "FALSE"), ("TRUE", "TRUE")])
def test_training_pins_mkl_dynamic_unless_the_caller_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str | None, after: str
) -> None:
    # MKL's dynamic mode lets the machine's load change the weights; a caller's own setting wins
    monkeypatch.setenv("MKL_DYNAMIC", before or "unset")  # records the original, so the test leaves no trace
    if before is None:
        monkeypatch.delenv("MKL_DYNAMIC")
    train(tmp_path, steps=1, stage2_steps=0, batch_size=2, threads=1, progress=False, arch=TINY)
    assert os.environ["MKL_DYNAMIC"] == after


def test_second_stage_longer_than_the_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stage2_steps"):
        train(tmp_path, steps=10, stage2_steps=10, threads=1, progress=False, arch=TINY)
    with pytest.raises(SystemExit):  # argparse: a message, not a traceback
        main(["--out", str(tmp_path), "--steps", "100", "--stage2-steps", "200"])
    with pytest.raises(ValueError, match="stage3_steps"):
        train(tmp_path, steps=10, stage2_steps=5, stage3_steps=5, threads=1, progress=False, arch=TINY)
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--steps", "100", "--stage2-steps", "50", "--stage3-exist", "1.5"])


def test_third_stage_runs_after_the_second(tmp_path: Path) -> None:
    # step 2 is stage 2, step 3 stage 3 (only existence questions with stage3_exist = 1)
    out = train(
        tmp_path,
        steps=4,
        stage2_steps=1,
        stage3_steps=1,
        stage3_exist=1.0,
        batch_size=4,
        threads=1,
        progress=False,
        arch=TINY,
    )
    assert (out / "model.safetensors").exists()
    recorded = json.loads((out / "training_args.json").read_text())
    assert (recorded["stage3_steps"], recorded["stage3_exist"]) == (1, 1.0)


def test_data_stream_is_a_function_of_seed_and_step() -> None:
    a = sample_example(np.random.default_rng([0, 5, 17]), warm=False, arch=TINY)
    b = sample_example(np.random.default_rng([0, 5, 17]), warm=False, arch=TINY)
    assert (a.prompt, a.answer) == (b.prompt, b.answer)
    if a.image is not None:
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


def _two_card_scene(b_x0: float = 560.0) -> syn.Scene:
    red = syn.Card((300.0, 450.0, 400.0, 550.0), "red", "cyan", 3)
    blue = syn.Card((b_x0, 450.0, b_x0 + 100.0, 550.0), "blue", "black", 1)
    return syn.Scene(size_wh=(2400, 2400), background=(220, 220, 220), cards=(red, blue))


@pytest.mark.parametrize(
    ("window", "b_x0", "want_red", "want_blue"),
    [
        # cards 16 px in the 96-px view, pips 3.5 px: every label, red in the left half, blue in the right
        ((180.0, 300.0, 780.0, 900.0), 560.0, ("red", "cyan", "3", "left"), ("blue", "black", "1", "right")),
        # the same pair framed the other way round
        ((0.0, 300.0, 600.0, 900.0), 40.0, ("red", "cyan", "3", "right"), ("blue", "black", "1", "left")),
        # cards 12 px, pips 2.6 px: pip colour still labelled, the count is not (unsure, ignored)
        ((0.0, 0.0, 800.0, 800.0), 560.0, ("red", "cyan", None, "left"), ("blue", "black", None, "right")),
        # a card centred on the view's midline is neither left nor right
        ((50.0, 200.0, 650.0, 800.0), 560.0, ("red", "cyan", "3", None), ("blue", "black", "1", "right")),
    ],
)
def test_patch_labels(
    window: tuple[float, float, float, float],
    b_x0: float,
    want_red: tuple[str, str, str | None, str | None],
    want_blue: tuple[str, str, str | None, str | None],
) -> None:
    scene = _two_card_scene(b_x0)
    grid = 12
    labels = [lab.reshape(grid, grid) for lab in patch_labels(scene, window, grid, 96)]
    side = max(window[2] - window[0], window[3] - window[1])
    classes = (CARD_CLASSES, PIP_CLASSES, COUNT_CLASSES, SIDE_CLASSES)
    for card, want in zip(scene.cards, (want_red, want_blue), strict=True):
        cx, cy = card.center
        col, row = int((cx - window[0]) / side * grid), int((cy - window[1]) / side * grid)  # the patch at the centre
        got = tuple(
            None if lab[row, col] == IGNORE else names[lab[row, col]]
            for lab, names in zip(labels, classes, strict=True)
        )
        assert got == want
    assert (labels[0] == 0).sum() > grid * grid // 2  # background stays "none"


def test_hinge_margins_are_jointly_reachable() -> None:
    # a patch must reach every labelled margin at once: with near-orthogonal words that needs sum(margin^2) < 1
    assert sum(m * m for m in POS_MARGIN.values()) < 1.0


def test_binding_examples_ask_about_one_card_of_a_framed_pair() -> None:
    # the second stage's examples: a view framing a side-by-side pair and a question about one of its two cards
    # (its pip colour or count, the half of the view it lies in, or left / right of the other card)
    examples = [
        sample_example(np.random.default_rng([3, 0, i]), warm=False, arch=EmbeddedArch(), force_pair=True)
        for i in range(80)
    ]
    side = [e for e in examples if e.prompt.startswith("Is the") and "on the left or right side?" in e.prompt]
    relative = [e for e in examples if "on the left or right side of the" in e.prompt]
    attribute = [e for e in examples if "color of the dots" in e.prompt]
    assert len(side) + len(relative) + len(attribute) >= 0.8 * len(examples)
    assert min(len(side), len(relative), len(attribute)) >= 0.1 * len(examples)
    for group in (side, relative):
        answers = {e.answer for e in group}
        assert answers >= {"left", "right"} or answers >= {"A", "B"}
        assert all(e.image is not None and e.side_labels is not None for e in group)


def test_clutter_leanings_name_the_card_colour_a_grey_shape_is_tinted_toward() -> None:
    window = (0.0, 0.0, 400.0, 400.0)
    shapes = (
        syn.Clutter((10.0, 10.0, 60.0, 60.0), (118, 142, 124), True),  # greenish grey
        syn.Clutter((100.0, 100.0, 150.0, 150.0), (150, 150, 150), False),  # plain grey: leans to nothing
        syn.Clutter((500.0, 500.0, 550.0, 550.0), (160, 120, 125), True),  # reddish, outside the window
    )
    scene = syn.Scene((800, 800), (235, 235, 235), (), shapes)
    assert clutter_leanings(scene, window) == ["green"]


def test_hard_existence_examples_ask_yes_no_with_slivers_and_tinted_clutter_as_no() -> None:
    examples = [
        sample_example(np.random.default_rng([5, 0, i]), warm=False, arch=EmbeddedArch(), force_exist=True)
        for i in range(60)
    ]
    asked = [e for e in examples if e.prompt.startswith("Is there a")]
    assert len(asked) >= 0.9 * len(examples)
    assert {e.answer for e in asked} == {"Yes", "No"}
    assert all(e.image is not None for e in asked)
    # slivers are "No" and most views are not: neither answer may dominate (71 % "No" before the balance fix)
    no_share = sum(e.answer == "No" for e in asked) / len(asked)
    assert 0.4 <= no_share <= 0.65
