"""Where the existence ranking and the map's first region disagree on the embedded model, and why.

    python benchmarks/embedded_rank_probe.py [benchmarks/results/embedded_ablations/items.jsonl] [model]

Reads the per-item ablation results (``python -m focus_tool.eval.synthetic --ablations``), takes the test questions
on which full FOCUS and "no ranking" (n_steps = 1) disagree, reruns both and prints, per target, the region each one
answered on, its P(Yes) (FOCUS only) and the share of the ground-truth box inside it. Then, on the first 60 attribute
questions, P(Yes) of the existence prompt on square windows the size of the preset's regions (3 of the 12 grid cells,
a quarter of the image's long side) placed so that a given share of the asked card's width is inside (the card cut by
the window's left border; share 1 = the window centred on the card): can the ranking tell a sliver from the whole
card? Single thread, ~40 s.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.adapters.registry import load_adapter
from focus_tool.data import synthetic as syn
from focus_tool.ops.boxes import box_coverage
from focus_tool.pipeline import FocusPipeline
from focus_tool.presets import config_for
from focus_tool.steps.answer import crop


def main(items_path: str, model: str) -> None:
    torch.set_num_threads(1)
    rows = [json.loads(line) for line in Path(items_path).read_text().splitlines()]
    differ = [i for i, r in enumerate(rows) if r["focus"] != r["abl_no_ranking"]]
    adapter = load_adapter(model)
    if not isinstance(adapter, LlavaAdapter):
        raise SystemExit("the probe needs a LLaVA-family checkpoint (the embedded model)")
    cfg = config_for(adapter, model)
    pipes = {
        "FOCUS": FocusPipeline(adapter, cfg),
        "no ranking": FocusPipeline(
            adapter, dataclasses.replace(cfg, rank=dataclasses.replace(cfg.rank, n_steps=1, overrun=False))
        ),
    }
    items = syn.benchmark_items(0, len(rows))
    print(f"{len(differ)} of {len(rows)} questions differ")
    for i in differ:
        q = items[i].question
        image = syn.render(items[i].scene)
        for name, pipe in pipes.items():
            res = pipe.zoom(image, question=q.text, options=list(q.options))
            picked = [r for r in res.regions if r.selected]
            parts = []
            for target, gt in zip(q.targets, q.target_boxes_xyxy, strict=True):
                for r in (r for r in picked if r.target == target):
                    conf = "-" if r.confidence is None else f"{r.confidence:.4f}"
                    inside = float(box_coverage(np.array([r.box], float), np.array([gt], float))[0, 0])
                    parts.append(f"{target}: P(Yes) {conf}, GT inside {inside:.0%}")
            ok = "right" if res.answer == q.options[0] else "wrong"
            print(f"item {i:3d} {q.kind:9s} {name:10s} {ok}  " + "; ".join(parts))
    sliver_table(adapter, items, cfg.proposal.s_min)


SHARES = (0.0, 0.1, 0.2, 0.35, 0.5, 1.0)


def sliver_table(adapter: LlavaAdapter, items: list[syn.BenchItem], cells: int, n: int = 60) -> None:
    """P(Yes) against the share of the asked card's width inside a window ``cells`` grid cells wide (a region)."""
    probs: dict[float, list[float]] = {s: [] for s in SHARES}
    for it in [it for it in items if it.question.kind == "attribute"][:n]:
        image = syn.render(it.scene)
        x0, y0, x1, y1 = it.question.target_boxes_xyxy[0]
        side, cy = cells * max(image.size) / adapter.side, (y0 + y1) / 2  # the grid spans the padded long side
        prompt = syn.existence_question(it.question.targets[0])
        for share in SHARES:
            left = x1 - share * (x1 - x0) if share < 1 else (x0 + x1 - side) / 2
            view = crop(image, np.array([left, cy - side / 2, left + side, cy + side / 2]))
            probs[share].append(float(torch.sigmoid(adapter.yes_no_margins([view], [prompt])[0])))
    print(f"P(Yes) against the share of the asked card inside the window ({n} attribute questions):")
    for share, p in probs.items():
        a = np.array(p)
        print(f"  share {share:4.2f}: median P(Yes) {np.median(a):.3f}, P(Yes) > 0.5 on {np.mean(a > 0.5):.1%}")


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/embedded_ablations/items.jsonl",
        sys.argv[2] if len(sys.argv) > 2 else "focus_tool/embedded/model",
    )
