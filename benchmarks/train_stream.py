"""Print the embedded model's training stream: per step, the learning rate and a hash of the batch.

Usage (one checkout per run, then diff the outputs):
    PYTHONPATH=CHECKOUT python benchmarks/train_stream.py [--start 5] [--stop 4500] [--every 10] > stream.jsonl

For the default training command (4500 steps, the last 1000 a second stage, seed 0), each line holds the step,
the learning rate and the first 16 hex digits of a sha256 over the collated batch (input ids, pixels, labels, patch
labels). Two checkouts that print the same lines feed the optimizer the same data at the same rates, so a difference
in their weights comes from the arithmetic. Works on the current layout (``step_examples``, what train() calls)
and on the single-file ``train.py`` before the split (98e6a3e, whose retrain gave the shipped weights).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from focus_tool.data import synthetic as syn
from focus_tool.embedded import train as T
from focus_tool.embedded.build import EmbeddedArch, build_processor

STEPS, STAGE2_STEPS, SEED = 4500, 1000, 0


def _steps() -> tuple[Callable[[int], float], Callable[[int], list[Any]]]:
    """(lr_at, examples_at) of the default command, for the checkout on the path."""
    if hasattr(T, "step_examples"):  # the current layout: train()'s own schedule and batch function
        from focus_tool.embedded.schedule import Schedule

        cfg, arch = T.TrainConfig(), EmbeddedArch()
        sched = Schedule(lr=cfg.lr, steps=cfg.steps, stage2=cfg.stage2, stage3=cfg.stage3)
        return sched.lr_at, lambda step: T.step_examples(step, cfg, sched, arch)
    # 98e6a3e: the schedule and the batch loop were written inside train(); these are its lines for the default
    # command (batch 32, warm-up share 0.1, stage-2 shares 0.45 pair / 0.25 side, no stage 3)
    lr, main_steps = 1e-3, STEPS - STAGE2_STEPS
    warmup = max(1, int(0.04 * main_steps))

    def cosine(t: float, peak: float) -> float:
        return lr * (0.05 + (peak - 0.05) * 0.5 * (1 + math.cos(math.pi * t)))

    def lr_at(step: int) -> float:
        if step >= main_steps:
            return cosine((step - main_steps) / STAGE2_STEPS, 0.5)
        if step < warmup:
            return lr * (step + 1) / warmup
        return cosine((step - warmup) / max(1, main_steps - warmup), 1.0)

    def examples_at(step: int) -> list[Any]:
        rng = np.random.default_rng([syn.TRAIN_STREAM, SEED, step])
        examples = []
        for _ in range(32):
            r = rng.random() if step >= main_steps else 1.0
            examples.append(
                T.sample_example(  # type: ignore[attr-defined]
                    rng,
                    warm=step < 0.1 * main_steps,
                    arch=EmbeddedArch(),
                    force_pair=0 <= r < 0.45,
                    force_side=0.45 <= r < 0.7,
                )
            )
        return examples

    return lr_at, examples_at


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=int, default=5)
    ap.add_argument("--stop", type=int, default=STEPS)
    ap.add_argument("--every", type=int, default=10)
    args = ap.parse_args(argv)
    lr_at, examples_at = _steps()
    collate = T.collate  # type: ignore[attr-defined]  # imported by train.py in both layouts
    processor = build_processor(EmbeddedArch())
    for step in range(args.start, args.stop, args.every):
        batch = collate(examples_at(step), processor)
        h = hashlib.sha256()
        for key in sorted(batch):
            value = batch[key]
            h.update(key.encode())
            h.update(value.numpy().tobytes() if hasattr(value, "numpy") else repr(value).encode())
        print(json.dumps({"step": step, "lr": lr_at(step), "h": h.hexdigest()[:16]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
