"""Compare two embedded-training checkpoints (``ckpt.pt``) bit for bit.

Usage:
    python benchmarks/compare_checkpoints.py RUN_A/ckpt.pt RUN_B/ckpt.pt

Every tensor (model, aux, head and optimizer state) must be ``torch.equal`` with the same dtype and shape, and
every other value ``==``. Used to show that two checkouts train identically over part of a full-length run (e.g.
both stopped after the checkpoint at step 500 of the default 4500-step command). Exit status 0 only when equal.
"""

from __future__ import annotations

import sys
from typing import Any

import torch


def differences(a: Any, b: Any, path: str = "") -> tuple[int, list[str]]:
    """(tensors compared, paths that differ) between two nested checkpoint values."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return 1, [] if same else [path]
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return 0, [f"{path} (keys)"]
        n, bad = 0, []
        for k in a:
            dn, db = differences(a[k], b[k], f"{path}/{k}")
            n, bad = n + dn, bad + db
        return n, bad
    if isinstance(a, list | tuple):
        if not isinstance(b, list | tuple) or len(a) != len(b):
            return 0, [f"{path} (length)"]
        n, bad = 0, []
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            dn, db = differences(u, v, f"{path}[{i}]")
            n, bad = n + dn, bad + db
        return n, bad
    return 0, [] if a == b else [path]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = (torch.load(p, weights_only=False) for p in args)
    n, bad = differences(a, b)
    for p in bad[:20]:
        print("differs:", p)
    verdict = "ALL EQUAL" if not bad else f"UNEQUAL ({len(bad)} differ)"
    print(f"step {a.get('step')} vs {b.get('step')}: {n} tensors -> {verdict}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
