"""Check that two checkouts train bit-for-bit identical embedded models.

Usage:
    python benchmarks/train_equivalence.py --ref /tmp/train_ref [--new .] [-- TRAIN FLAGS]

Runs ``python -m focus_tool.embedded.train`` from the reference checkout and
from the new one (each with PYTHONPATH set to its own root, --threads 1,
--no-progress, under ``nice -n 10``) with the same flags, then compares
``model/model.safetensors`` tensor by tensor (torch.equal) and
``model/training_args.json``. Default flags: a short run
(--steps 40 --stage2-steps 12). Exit status 0 only when everything is equal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from compare_weights import compare

DEFAULT_FLAGS = ["--steps", "40", "--stage2-steps", "12"]


def run_train(root: Path, out: Path, flags: list[str]) -> None:
    """Train once from the checkout at ``root`` into ``out``."""
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    cmd = ["nice", "-n", "10", sys.executable, "-m", "focus_tool.embedded.train", "--out", str(out)]
    cmd += [*flags, "--threads", "1", "--no-progress"]
    subprocess.run(cmd, cwd=root, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", type=Path, required=True, help="reference checkout root")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1], help="new checkout root")
    parser.add_argument("flags", nargs="*", help="training flags after --")
    args = parser.parse_args(argv)
    flags = args.flags or DEFAULT_FLAGS
    with tempfile.TemporaryDirectory() as tmp:
        outs = {}
        for name, root in (("ref", args.ref.resolve()), ("new", args.new.resolve())):
            outs[name] = Path(tmp) / name
            run_train(root, outs[name], flags)
        same = compare(
            str(outs["ref"] / "model" / "model.safetensors"), str(outs["new"] / "model" / "model.safetensors")
        )
        ja = json.loads((outs["ref"] / "model" / "training_args.json").read_text())
        jb = json.loads((outs["new"] / "model" / "training_args.json").read_text())
        if ja == jb and list(ja) == list(jb):
            print("training_args.json: equal")
        else:
            print(f"training_args.json: unequal\n  ref {ja}\n  new {jb}")
            same = False
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
