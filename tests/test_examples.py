"""Every example script runs (on a tiny random LLaVA, so the test does not depend on the embedded weights).

By default an example writes only into a temporary folder it removes: the current folder and TMPDIR are empty
afterwards. With ``--out PATH`` the overlay is kept there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_models import save_tiny_llava

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.name for p in (REPO / "examples").glob("*.py"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava-examples"))


def run_example(script: str, tmp_path: Path, model: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run ``examples/<script>`` with cwd and TMPDIR in fresh empty folders; returns the process and TMPDIR."""
    cwd, tmpdir = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmpdir.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "TMPDIR": str(tmpdir)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), "--model", str(model), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "forward passes" in proc.stdout
    assert not any(cwd.iterdir()), f"{script} wrote into the current folder: {sorted(cwd.iterdir())}"
    return proc, tmpdir


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_and_leaves_nothing_behind(script: str, tmp_path: Path, tiny: Path) -> None:
    proc, tmpdir = run_example(script, tmp_path, tiny)
    assert not any(tmpdir.iterdir()), f"{script} left temporary files: {sorted(tmpdir.iterdir())}"
    assert "now removed (--out PATH keeps it)" in proc.stdout


def test_out_keeps_the_overlay(tmp_path: Path, tiny: Path) -> None:
    out = tmp_path / "kept" / "o.png"
    out.parent.mkdir()
    proc, tmpdir = run_example("zoom_one_image.py", tmp_path, tiny, "--out", str(out))
    assert out.is_file()
    assert f"overlay written to {out}" in proc.stdout
    assert not any(tmpdir.iterdir())
