"""The embedded model's training script: a few steps run, resume from the checkpoint, and the result loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.embedded.train import sample_example, train
from tests.tiny_models import TINY

pytestmark = pytest.mark.slow


def test_training_smoke_and_resume(tmp_path: Path) -> None:
    out = train(tmp_path, steps=3, batch_size=4, threads=1, progress=False, ckpt_every=2, arch=TINY)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and np.isfinite(log[0]["loss"])
    adapter = LlavaAdapter.from_pretrained(out)
    assert adapter.side == TINY.image_size // TINY.patch_size
    # a rerun with more steps resumes at step 3 instead of starting over
    train(tmp_path, steps=4, batch_size=4, threads=1, progress=False, ckpt_every=2, arch=TINY)
    steps = [json.loads(line)["step"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert steps == [0]  # step 3 is not a multiple of 10: nothing new logged, and step 0 was not redone
    import torch

    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 4


def test_data_stream_is_a_function_of_seed_and_step() -> None:
    a = sample_example(np.random.default_rng([0, 5, 17]), warm=False, arch=TINY)
    b = sample_example(np.random.default_rng([0, 5, 17]), warm=False, arch=TINY)
    assert (a.prompt, a.answer) == (b.prompt, b.answer)
    if a.image is not None:
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
