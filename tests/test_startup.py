"""``focus --help`` and ``focus serve --help`` import neither torch nor transformers; their start-up time is reported
(``benchmarks/startup.py``), not asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import sys\n"
    "from focus_tool.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "sys.stderr.write(' '.join(m for m in ('torch', 'transformers', 'mcp') if m in sys.modules) + '\\n')\n"
)


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"]], ids=["focus --help", "focus serve --help"])
def test_help_imports_no_torch_nor_transformers(argv: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "usage: focus" in done.stdout
    assert done.stderr.strip().splitlines()[-1:] in ([], [""]), done.stderr  # torch, transformers, mcp: none
