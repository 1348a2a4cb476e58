"""Per-task accuracy of an embedded-model checkpoint on held-out training-distribution examples (teacher forced).

    python benchmarks/embedded_diagnose.py runs/embedded          # a run folder (reads ckpt.pt) or a model folder

Prints, per task (existence, target naming, multiple choice / open answers by question kind), the share of
examples whose every answer token is the argmax; and whether P(Yes) depends on the colour asked (it must).
Cheap (a few seconds on one thread): use it during training to see which skill is missing.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.data import synthetic as syn
from focus_tool.embedded.build import EmbeddedArch
from focus_tool.embedded.data import IGNORE, PATCH_LABEL_KEYS, collate, sample_example
from focus_tool.embedded.train import export_checkpoint


def main(path: Path) -> None:
    torch.set_num_threads(1)
    if (path / "ckpt.pt").exists():
        path = export_checkpoint(path, Path(tempfile.mkdtemp()))
    model = LlavaForConditionalGeneration.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    stats: dict[str, list[bool]] = {}
    for b in range(6):
        examples = [
            sample_example(np.random.default_rng([9, 9, b, i]), warm=False, arch=EmbeddedArch()) for i in range(32)
        ]
        batch = collate(examples, processor)
        for key in PATCH_LABEL_KEYS:
            batch.pop(key, None)
        with torch.no_grad():
            logits = model(**batch).logits
        labels = batch["labels"]
        for i, ex in enumerate(examples):
            pos = (labels[i] != IGNORE).nonzero().flatten()
            ok = bool((logits[i, pos - 1].argmax(-1) == labels[i, pos]).all())
            if ex.image is None:
                kind = "naming"
            elif ex.answer in ("Yes", "No"):
                kind = "existence"
            else:
                form = "mc" if ex.answer in "ABCD" else "open"
                what = (
                    "relative" if "left or right" in ex.prompt else "count" if "How many" in ex.prompt else "attribute"
                )
                kind = f"{form}-{what}"
            stats.setdefault(kind, []).append(ok)
    for kind, oks in sorted(stats.items()):
        print(f"{kind:16s} n={len(oks):3d} accuracy={np.mean(oks):.2f}")
    adapter = LlavaAdapter(model, processor)
    scene = syn.sample_scene(
        np.random.default_rng(0), size_wh=(400, 400), card_side=120, n_cards=1, target_colors=("red",)
    )
    questions = [syn.existence_question(f"{c} card") for c in syn.CARD_COLORS]
    margins = adapter.yes_no_margins([syn.render(scene)] * len(questions), questions).numpy()
    print(
        "P(Yes) on one red card, by colour asked:",
        {c: round(float(1 / (1 + np.exp(-m))), 3) for c, m in zip(syn.CARD_COLORS, margins, strict=True)},
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
