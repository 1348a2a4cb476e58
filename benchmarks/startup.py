"""Start-up time of ``focus --help`` and ``focus serve --help`` (best of N fresh interpreters), and whether either
imported torch or transformers. Reported, not asserted: ``python benchmarks/startup.py [N]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import sys\nfrom focus_tool.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    "sys.stderr.write('heavy: ' + (' '.join(m for m in ('torch', 'transformers') if m in sys.modules) or 'none'))\n"
)


def measure(argv: list[str], runs: int) -> tuple[float, str]:
    """Best wall time of ``runs`` fresh interpreters running ``focus *argv``, and the heavy modules imported."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    best, heavy = float("inf"), ""
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env)
        best = min(best, time.perf_counter() - t0)
        heavy = done.stderr.strip().splitlines()[-1]
    return best, heavy


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    for argv in (["--help"], ["serve", "--help"]):
        best, heavy = measure(argv, runs)
        sys.stdout.write(f"focus {' '.join(argv):<14} {best:.2f} s (best of {runs}); {heavy}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
