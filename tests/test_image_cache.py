"""Encoded-image reuse: a prefill through the image-prefix KV cache equals a full prefill, and hits are counted."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.adapters.llava_onevision import LlavaOnevisionAdapter
from focus_tool.adapters.prefix_cache import ImagePrefixCache, image_digest
from focus_tool.adapters.qwen2_5_vl import Qwen25VLAdapter
from focus_tool.config import FocusConfig, ProposalConfig, RankConfig
from focus_tool.pipeline import FocusPipeline
from tests.tiny_models import tiny_llava, tiny_onevision, tiny_qwen25vl


def _image(seed: int, wh: tuple[int, int] = (300, 200)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((wh[1], wh[0], 3)) * 255).astype("uint8"))


def _llava() -> LlavaAdapter:
    return LlavaAdapter(*tiny_llava(seed=2), model_id="tiny")


def _onevision() -> LlavaOnevisionAdapter:
    return LlavaOnevisionAdapter(*tiny_onevision(seed=2), model_id="tiny-ov")


@pytest.mark.parametrize("make", [_llava, _onevision], ids=["llava", "onevision"])
def test_cached_prefill_equals_full_prefill(make: object) -> None:
    adapter: MLLMAdapter = make()  # type: ignore[operator]
    image = _image(0)
    questions = [("Is there a red card in the image?", "red card"), ("Is there a blue card in the image?", "blue card")]
    full = [adapter.prefill(image, q, t) for q, t in questions]
    assert adapter.enable_image_cache(2)
    adapter.counter.reset()
    cached = [adapter.prefill(image, q, t) for q, t in questions * 2]
    assert adapter.counter.image_cache_hits == 3  # the first call fills the cache, the next three reuse it
    assert adapter.counter.counts["search"] == 4  # still one counted pass per prefill
    for ref, got in zip(full * 2, cached, strict=True):
        assert got.target_positions == ref.target_positions and got.visual_positions == ref.visual_positions
        assert got.yes_no_margin == pytest.approx(ref.yes_no_margin, abs=1e-4)
        for a, b in zip(ref.layer_values, got.layer_values, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_another_image_misses_and_the_lru_evicts() -> None:
    adapter = _llava()
    adapter.enable_image_cache(1)
    q, t = "Is there a red card in the image?", "red card"
    adapter.prefill(_image(0), q, t)
    adapter.prefill(_image(1), q, t)  # evicts image 0
    adapter.prefill(_image(0), q, t)
    cache = adapter.image_cache
    assert cache is not None and (cache.hits, cache.misses, len(cache)) == (0, 3, 1)
    adapter.prefill(_image(0), "Is there a blue card in the image?", "blue card")
    assert cache.hits == 1


def test_pipeline_reports_reuse_on_the_second_question() -> None:
    adapter = _llava()
    adapter.enable_image_cache(2)
    cfg = FocusConfig(proposal=ProposalConfig(k=8, s_min=1, s_max=1), rank=RankConfig(n_steps=1, overrun=False))
    pipe = FocusPipeline(adapter, cfg)
    first = pipe.zoom(_image(0), question="What is the color of the red card?", target="red card", answer=False)
    second = pipe.zoom(_image(0), question="What is the color of the blue card?", target="blue card", answer=False)
    assert (first.image_cache_hits, first.prefill_tokens_reused) == (0, 0)
    assert second.image_cache_hits == 1
    assert second.prefill_tokens_reused > adapter.side**2  # at least the image tokens
    # identical regions with and without the cache
    plain = FocusPipeline(_llava(), cfg).zoom(
        _image(0), question="What is the color of the blue card?", target="blue card", answer=False
    )
    assert [r.box for r in plain.regions] == [r.box for r in second.regions]
    assert dataclasses.asdict(cfg) == dataclasses.asdict(pipe.config)


def test_qwen_does_not_opt_in() -> None:
    adapter = Qwen25VLAdapter(*tiny_qwen25vl(seed=0), model_id="tiny-qwen")
    assert adapter.enable_image_cache(2) is False and adapter.image_cache is None


def test_digest_is_content_based() -> None:
    a, b = _image(0), _image(0)
    assert image_digest(a) == image_digest(b) != image_digest(_image(1))
    assert image_digest(a) != image_digest(a.convert("L"))


def test_cache_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        ImagePrefixCache(0)
