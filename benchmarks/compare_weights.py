"""Compare two safetensors files tensor by tensor.

Usage: python benchmarks/compare_weights.py A.safetensors B.safetensors

Prints one line per tensor (equal, or the max abs difference / shape or dtype
mismatch / missing) and a final verdict. Exit status 0 when every tensor is
bit-for-bit equal (torch.equal) and both files hold the same names, else 1.
"""

from __future__ import annotations

import argparse
import sys

import torch
from safetensors.torch import load_file


def compare(path_a: str, path_b: str) -> bool:
    """Print a per-tensor comparison of two safetensors files.

    Args:
        path_a: first file.
        path_b: second file.

    Returns:
        True when both files hold the same names and every tensor is equal.
    """
    a = load_file(path_a)
    b = load_file(path_b)
    same = True
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"{name}: missing in {'A' if name not in a else 'B'}")
            same = False
            continue
        ta, tb = a[name], b[name]
        if ta.shape != tb.shape or ta.dtype != tb.dtype:
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
