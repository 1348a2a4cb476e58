"""Compare two safetensors files, or two training checkpoints (``ckpt.pt``), tensor by tensor.

Usage: python benchmarks/compare_weights.py A.safetensors B.safetensors
       python benchmarks/compare_weights.py RUN_A/ckpt.pt RUN_B/ckpt.pt

A checkpoint's nested model / aux / head / optimizer state is flattened to
names like ``opt/state/113/exp_avg``; its other values (the step, the
optimizer's param groups) are compared with ``==``. Prints one line per entry
(equal, or the max abs difference / shape or dtype mismatch / missing) and a
final verdict. Exit status 0 when every entry is bit-for-bit equal
(torch.equal) and both files hold the same names, else 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
from safetensors.torch import load_file


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts / lists / tuples as one flat ``{"a/b[0]": leaf}`` mapping (tensors and plain values)."""
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in flatten(sub, f"{prefix}{key}/").items()}
    if isinstance(value, list | tuple):
        return {k: v for i, sub in enumerate(value) for k, v in flatten(sub, f"{prefix.rstrip('/')}[{i}]/").items()}
    return {prefix.rstrip("/"): value}


def load_entries(path: str) -> dict[str, Any]:
    """A safetensors file's tensors, or a ``torch.save`` checkpoint flattened by :func:`flatten`."""
    if path.endswith(".safetensors"):
        return dict(load_file(path))
    return flatten(torch.load(path, weights_only=False))


def compare(path_a: str, path_b: str) -> bool:
    """Print a per-entry comparison of two safetensors files or two checkpoints.

    Args:
        path_a: first file.
        path_b: second file.

    Returns:
        True when both files hold the same names and every entry is equal.
    """
    a = load_entries(path_a)
    b = load_entries(path_b)
    same = True
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"{name}: missing in {'A' if name not in a else 'B'}")
            same = False
            continue
        ta, tb = a[name], b[name]
        if not isinstance(ta, torch.Tensor) or not isinstance(tb, torch.Tensor):
            equal = type(ta) is type(tb) and ta == tb
            print(f"{name}: {'equal' if equal else f'unequal, {ta!r} vs {tb!r}'}")
            same = same and equal
        elif ta.shape != tb.shape or ta.dtype != tb.dtype:
            print(f"{name}: mismatch {tuple(ta.shape)} {ta.dtype} vs {tuple(tb.shape)} {tb.dtype}")
            same = False
        elif torch.equal(ta, tb):
            print(f"{name}: equal")
        else:
            diff = (ta.double() - tb.double()).abs().max().item()
            print(f"{name}: unequal, max abs diff {diff:.3e}")
            same = False
    print("ALL EQUAL" if same else "NOT EQUAL")
    return same


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args(argv)
    return 0 if compare(args.a, args.b) else 1


if __name__ == "__main__":
    sys.exit(main())
