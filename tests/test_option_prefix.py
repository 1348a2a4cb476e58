"""Lean FOCUS accounting (issue 15, check 7): options scored on one prefill equal K full prefills on all three
architectures, and the pass / token / image counters agree with a forward pre-hook on the language model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.adapters.llava_onevision import LlavaOnevisionAdapter
from focus_tool.adapters.qwen2_5_vl import Qwen25VLAdapter
from focus_tool.config import FocusConfig, ProposalConfig, RankConfig
from focus_tool.pipeline import FocusPipeline
from tests.adapter_checks import PROMPT, noise_image
from tests.tiny_models import tiny_llava, tiny_onevision, tiny_qwen25vl

OPTIONS = ["black", "white", "a red card", "cyan", "the left side"]  # one- and several-token replies

MAKERS: dict[str, Callable[[], Any]] = {
    "llava": lambda: LlavaAdapter(*tiny_llava(seed=0), model_id="tiny-llava"),
    "onevision": lambda: LlavaOnevisionAdapter(*tiny_onevision(seed=0), model_id="tiny-ov"),
    "qwen2.5-vl": lambda: Qwen25VLAdapter(*tiny_qwen25vl(seed=0), model_id="tiny-qwen"),
}


@pytest.fixture(scope="module", params=list(MAKERS))
def adapter(request: pytest.FixtureRequest) -> Any:
    return MAKERS[request.param]()


@pytest.mark.parametrize("n_images", [1, 2])
def test_shared_prefix_scores_equal_k_prefills(adapter: Any, n_images: int) -> None:
    images = [noise_image(20, (120, 80)), noise_image(21, (40, 90))][:n_images]
    adapter.counter.reset()
    with adapter.counter.in_phase("answer"):
        full = adapter.option_log_likelihoods(images, PROMPT, OPTIONS)
    assert adapter.counter.counts["answer"] == len(OPTIONS)
    adapter.counter.reset()
    with adapter.counter.in_phase("answer"):
        shared = adapter.option_log_likelihoods(images, PROMPT, OPTIONS, shared_prefix=True)
    torch.testing.assert_close(shared, full, atol=1e-4, rtol=0)
    assert adapter.counter.counts["answer"] == 1  # one prefill
    assert adapter.counter.continuations["answer"] == len(OPTIONS)
    assert adapter.counter.images["answer"] >= 1


def test_shared_prefix_interleaved_equals_k_prefills(adapter: Any) -> None:
    if adapter.answer_mode != "multi":
        pytest.skip("one image per prompt: no interleaved answer")
    parts = [noise_image(22, (120, 80)), "This is the full image.", noise_image(23, (40, 90)), PROMPT]
    full = adapter.option_log_likelihoods_interleaved(parts, OPTIONS)
    shared = adapter.option_log_likelihoods_interleaved(parts, OPTIONS, shared_prefix=True)
    torch.testing.assert_close(shared, full, atol=1e-4, rtol=0)


def test_single_token_options_need_no_continuation(adapter: Any) -> None:
    options = ["black", "white"]
    full = adapter.option_log_likelihoods([noise_image(24)], PROMPT, options)
    adapter.counter.reset()
    shared = adapter.option_log_likelihoods([noise_image(24)], PROMPT, options, shared_prefix=True)
    torch.testing.assert_close(shared, full, atol=1e-4, rtol=0)
    ids = [adapter.tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
    if all(len(i) == 1 for i in ids):
        assert sum(adapter.counter.continuations.values()) == 0


@contextmanager
def lm_pre_hook(adapter: Any) -> Iterator[dict[str, int]]:
    """Count, at the language model's input, rows run from an empty cache, rows run on a cache, and new tokens."""
    seen = {"passes": 0, "continuations": 0, "tokens": 0}

    def hook(_module: Any, args: tuple, kwargs: dict) -> None:
        embeds = kwargs.get("inputs_embeds")
        rows, new = embeds.shape[:2]  # (B, N_new, width)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        cached = 0 if cache is None else int(cache.get_seq_length())
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            seen["tokens"] += int(mask[:, -new:].sum())
        else:
            seen["tokens"] += rows * new
        seen["passes" if cached == 0 else "continuations"] += rows

    handle = adapter.model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.parametrize("mode", ["paper", "adaptive"])
def test_counters_agree_with_a_forward_pre_hook(adapter: Any, mode: str) -> None:
    cfg = FocusConfig(
        proposal=ProposalConfig(k=16, s_min=1, s_max=1, s_dist=1.0),
        rank=RankConfig(n_steps=3, overrun=True, mode=mode, accept_conf=0.0),  # type: ignore[arg-type]
    )
    cfg = dataclasses.replace(cfg, answer=dataclasses.replace(cfg.answer, scheme="logit", shared_prefix=True))
    pipe = FocusPipeline(adapter, cfg)
    with lm_pre_hook(adapter) as seen:
        result = pipe.zoom(
            noise_image(30, (160, 100)), question="What is on the red card?", target="red card", options=OPTIONS
        )
    fp = result.forward_passes
    assert fp.search + fp.answer + fp.extraction == seen["passes"]
    assert sum(fp.continuations.model_dump().values()) == seen["continuations"]
    assert sum(fp.tokens.model_dump().values()) == seen["tokens"]
    assert fp.answer == 1 and fp.continuations.answer == len(OPTIONS)
    assert fp.images.answer == 1 or adapter.answer_mode == "multi"


def test_cached_image_prefix_counts_only_its_suffix() -> None:
    adapter = MAKERS["llava"]()
    adapter.enable_image_cache(2)
    image = noise_image(31, (120, 80))
    with lm_pre_hook(adapter) as seen:
        adapter.prefill(image, PROMPT, "red card")
        adapter.prefill(image, "Is there a blue card in the image?", "blue card")
    assert adapter.counter.counts["search"] == 2 and adapter.counter.images["search"] == 1
    assert adapter.counter.tokens["search"] == seen["tokens"]
    assert adapter.counter.tokens["search"] == adapter.counter.prefill_tokens - adapter.counter.reused_tokens
    assert adapter.counter.reused_tokens > 0
