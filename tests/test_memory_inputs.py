"""Issue 17, acceptance check 2: thin strips and concurrent 40 MP calls keep the service's RSS growth under 300 MB.

The figures come from ``benchmarks/input_memory.py`` (embedded model, real ``FocusService``, default allocator) run
in a fresh process. Before the fix a 20000 x 50 PNG cost +5.5 GB and 4 concurrent 40 MP calls 3.47 GiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
LIMIT_MB = 300.0


@pytest.fixture(scope="module")
def figures() -> dict[str, dict[str, object]]:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset the RSS high-water mark")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
        "PYTHONPATH": str(REPO),
    }
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "input_memory.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out: dict[str, dict[str, object]] = json.loads(run.stdout)
    print(json.dumps({k: v["mb"] for k, v in out.items()}))  # the reported figures (pytest -s)
    return out


CAPPED = ["14142x32", "20000x50", "40000x32"]
SERVED = ["14142x32 caps off", "20000x50 caps off", "40000x32 caps off", "16384x256", "40MP path"]


@pytest.mark.parametrize("case", CAPPED)
def test_strips_are_refused_in_one_line_for_free(figures: dict[str, dict[str, object]], case: str) -> None:
    fig = figures[case]
    assert str(fig["outcome"]).startswith("refused: ") and ("aspect" in fig["outcome"] or "long side" in fig["outcome"])
    assert float(fig["mb"]) < 20.0  # type: ignore[arg-type]


@pytest.mark.parametrize("case", SERVED)
def test_served_images_stay_under_the_limit(figures: dict[str, dict[str, object]], case: str) -> None:
    assert figures[case]["outcome"] == "served"
    assert float(figures[case]["mb"]) < LIMIT_MB, figures[case]  # type: ignore[arg-type]


def test_four_concurrent_40mp_calls_hold_one_image(figures: dict[str, dict[str, object]]) -> None:
    four, one = figures["4 x 40MP base64"], figures["40MP path"]
    assert four["outcome"] == ["served"] * 4
    assert float(four["mb"]) < LIMIT_MB  # type: ignore[arg-type]
    assert float(four["mb"]) < 1.5 * float(one["mb"])  # type: ignore[arg-type]  # decoded one at a time


def test_model_input_unchanged_up_to_2048_px() -> None:
    """Up to 2048 px the embedded model's pixel_values are bit for bit those of the former padding (convert + pad)."""
    from focus_tool.adapters.registry import load_adapter
    from focus_tool.ops.images import CLIP_MEAN_RGB

    adapter = load_adapter()
    rng = np.random.default_rng(1)
    for size in [(320, 240), (2048, 1536), (1536, 2048), (2048, 32), (700, 700)]:
        im = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
        w, h = size
        s = max(w, h)
        old = im.convert("RGB")
        if w != h:
            old = Image.new("RGB", (s, s), CLIP_MEAN_RGB)
            old.paste(im.convert("RGB"), ((s - w) // 2, (s - h) // 2))
        expected = adapter.processor(images=[old], text=["<image> x"], return_tensors="pt")["pixel_values"]
        got = adapter._inputs([im], ["<image> x"])["pixel_values"]
        assert got.shape == expected.shape and bool((got == expected.to(got.dtype)).all()), size
