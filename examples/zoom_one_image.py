"""Zoom into one synthetic image with the embedded model (or --model PATH) and save the overlay.

python examples/zoom_one_image.py [--model PATH] [--out overlay.png]

Without --out the overlay goes to a temporary folder that is removed when the script ends.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from focus_tool.data import synthetic as syn
from focus_tool.pipeline import FocusPipeline
from focus_tool.render import overlay


def run(model: str | None, out: Path) -> None:
    item = syn.sample_bench_item(np.random.default_rng([syn.DEMO_STREAM, 7]), "count")
    image = syn.render(item.scene)
    pipe = FocusPipeline.from_pretrained(model)
    result = pipe.zoom(image, question=item.question.text, options=list(item.question.options))
    print("question:", item.question.text, "options:", item.question.options, "(first is correct)")
    print("answer:", result.answer, "| targets:", result.targets)
    for region in result.regions[:3]:
        print(region.id, region.target, region.box, region.confidence)
    print("forward passes:", result.forward_passes.model_dump())
    overlay(image, result).save(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--out", type=Path, default=None, help="overlay PNG to keep (default: a temporary file)")
    args = ap.parse_args()
    if args.out is not None:
        run(args.model, args.out)
        print("overlay written to", args.out)
        return
    with tempfile.TemporaryDirectory(prefix="focus-example-") as tmp:
        run(args.model, Path(tmp) / "overlay.png")
        print("overlay written to a temporary folder, now removed (--out PATH keeps it)")


if __name__ == "__main__":
    main()
