"""Zoom into one synthetic image with the embedded model (or --model PATH) and save the overlay.

python examples/zoom_one_image.py [--model PATH] [--out zoom_example.png]
"""

from __future__ import annotations

import argparse

import numpy as np

from focus_tool.data import synthetic as syn
from focus_tool.pipeline import FocusPipeline
from focus_tool.render import overlay


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--out", default="zoom_example.png")
    args = ap.parse_args()

    item = syn.sample_bench_item(np.random.default_rng([syn.DEMO_STREAM, 7]), "count")
    image = syn.render(item.scene)
    pipe = FocusPipeline.from_pretrained(args.model)
    result = pipe.zoom(image, question=item.question.text, options=list(item.question.options))
    print("question:", item.question.text, "options:", item.question.options, "(first is correct)")
    print("answer:", result.answer, "| targets:", result.targets)
    for region in result.regions[:3]:
        print(region.id, region.target, region.box, region.confidence)
    print("forward passes:", result.forward_passes.model_dump())
    overlay(image, result).save(args.out)
    print("overlay written to", args.out)


if __name__ == "__main__":
    main()
