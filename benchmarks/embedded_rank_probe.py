"""Where the existence ranking and the map's first region disagree on the embedded model, and why.

    python benchmarks/embedded_rank_probe.py [benchmarks/results/embedded_ablations/items.jsonl] [model]

Reads the per-item ablation results (``python -m focus_tool.eval.synthetic --ablations``), takes the test questions
on which full FOCUS and "no ranking" (n_steps = 1) disagree, reruns both and prints, per target, the region each one
answered on, its P(Yes) (FOCUS only) and the share of the ground-truth box inside it. Single thread, ~10 s.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from focus_tool.adapters.registry import load_adapter
from focus_tool.data import synthetic as syn
from focus_tool.ops.boxes import box_coverage
from focus_tool.pipeline import FocusPipeline
from focus_tool.presets import config_for


def main(items_path: str, model: str) -> None:
    torch.set_num_threads(1)
    rows = [json.loads(line) for line in Path(items_path).read_text().splitlines()]
    differ = [i for i, r in enumerate(rows) if r["focus"] != r["abl_no_ranking"]]
    adapter = load_adapter(model)
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


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/embedded_ablations/items.jsonl",
        sys.argv[2] if len(sys.argv) > 2 else "focus_tool/embedded/model",
    )
