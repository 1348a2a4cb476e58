"""``focus demo``: one synthetic fine-grained image, answered on the whole image (vanilla) and with FOCUS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from focus_tool.data import synthetic as syn
from focus_tool.render import OverlayStyle


def run_demo(
    *,
    seed: int,
    out_dir: Path,
    model: str | None,
    write: Callable[[str], None],
    tally: int = 0,
    overlay_style: OverlayStyle = "heat",
) -> int:
    """Generate the demo image for ``seed``, run vanilla and FOCUS, print both, write image + overlay PNGs.

    ``tally`` > 0 also answers the demo images ``seed + 1 .. seed + tally`` (no output files) and prints how often
    each method was right: one image is an anecdote, and the first one may well be a miss.
    """
    from focus_tool.adapters.registry import default_model_path
    from focus_tool.embedded.build import save_untrained
    from focus_tool.pipeline import FocusPipeline
    from focus_tool.render import overlay

    item, image, options = _demo_item(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_path = out_dir / f"{item.item_id}.png"
    image.save(image_path)
    if model is None and not default_model_path().joinpath("config.json").is_file():
        model = str(out_dir / "untrained-model")
        write("NOTE: the embedded model is not installed; this demo runs on an UNTRAINED (random) model of the same")
        write("      architecture, so its answers and boxes are meaningless. Train one: focus train-embedded")
        save_untrained(Path(model))
    pipe = FocusPipeline.from_pretrained(model)
    adapter = pipe.adapter
    q = item.question
    correct = "ABCD"[options.index(q.options[0])]
    scheme = pipe.config.answer.scheme

    def verdict(answer: str | None) -> str:
        return "right" if _is_right(answer, q.options[0], options, scheme) else "wrong"

    vanilla = pipe.vanilla(image, question=q.text, options=options)
    focus = pipe.zoom(image, question=q.text, options=options)
    ov_path = out_dir / f"{item.item_id}_overlay.png"
    overlay(image, focus, style=overlay_style).save(ov_path)
    gt = [int(v) for v in q.target_boxes_xyxy[0]]
    write(f"model:    {adapter.model_id}")
    write(
        f"image:    {image_path} ({image.width}x{image.height} px; the model's input is "
        f"{adapter.grid_for(image.size).input_wh[0]} px)"
    )
    write(f"question: {q.text}")
    write(
        "options:  "
        + "  ".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(options))
        + f"   correct: {correct} ({q.options[0]}); answer scheme: {scheme}"
    )
    write(
        f"vanilla (whole image): {vanilla.answer!r:6} {verdict(vanilla.answer)}  "
        f"[{vanilla.forward_passes.answer} answer passes]"
    )
    write(
        f"FOCUS:                 {focus.answer!r:6} {verdict(focus.answer)}  "
        f"[search passes {focus.forward_passes.search}, answer {focus.forward_passes.answer}, "
        f"extraction {focus.forward_passes.extraction}]"
    )
    for name, res in (("vanilla", vanilla), ("FOCUS", focus)):
        if res.answer_evidence is not None:
            write(f"{name + ' evidence:':<22} {res.answer_evidence.line()}")
    write(f"targets:  {', '.join(focus.targets) or '(none)'}   ground-truth box: {gt}")
    for r in focus.regions[:4]:
        conf = "-" if r.confidence is None else f"{r.confidence:.3f}"
        write(f"  {r.id:>3} box={list(r.box)} P(yes)={conf}{'  <- answered on this' if r.selected else ''}")
    write(f"overlay:  {ov_path}")
    if tally > 0:
        right = {"vanilla": 0, "FOCUS": 0}
        for s in range(seed + 1, seed + 1 + tally):
            it, img, opts = _demo_item(s)
            for name, res in (
                ("vanilla", pipe.vanilla(img, question=it.question.text, options=opts)),
                ("FOCUS", pipe.zoom(img, question=it.question.text, options=opts)),
            ):
                right[name] += int(_is_right(res.answer, it.question.options[0], opts, scheme))
        write(
            f"tally:    on the next {tally} demo images (seeds {seed + 1}-{seed + tally}): vanilla right "
            f"{right['vanilla']}/{tally}, FOCUS right {right['FOCUS']}/{tally} (chance {tally / 4:g})"
        )
    return 0


def _demo_item(seed: int) -> tuple[syn.BenchItem, Image.Image, list[str]]:
    """The demo question of ``seed``: the item, its rendered image and its options in shown (shuffled) order."""
    item = syn.sample_bench_item(np.random.default_rng([syn.DEMO_STREAM, seed]), "attribute", item_id=f"demo_{seed}")
    options = list(item.question.options)
    np.random.default_rng(seed).shuffle(options)
    return item, syn.render(item.scene), options


def _is_right(answer: str | None, correct: str, options: list[str], scheme: str) -> bool:
    """Whether ``answer`` is right: under "logit" it is the chosen option's text, under "letter" its letter first."""
    if scheme == "logit":
        return answer == correct
    return (answer or "").strip()[:1] == "ABCD"[options.index(correct)]
