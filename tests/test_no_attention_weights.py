"""No FOCUS code path asks for attention weights (paper §3.2, Fig. 7: cache values only; docs/method.md, Stage III)."""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.adapters.gemma3 import Gemma3Adapter
from focus_tool.adapters.internvl import InternVLAdapter
from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.adapters.llava_onevision import LlavaOnevisionAdapter
from focus_tool.adapters.qwen2_5_vl import Qwen25VLAdapter
from focus_tool.adapters.qwen3_vl import Qwen3VLAdapter
from focus_tool.adapters.smolvlm import SmolVLMAdapter
from tests.adapter_checks import PROMPT, TARGET, noise_image
from tests.tiny_gemma3 import tiny_gemma3
from tests.tiny_internvl import tiny_internvl
from tests.tiny_models import tiny_llava, tiny_onevision, tiny_qwen25vl
from tests.tiny_qwen3_vl import tiny_qwen3vl
from tests.tiny_smolvlm import tiny_smolvlm

PACKAGE = Path(__file__).resolve().parent.parent / "focus_tool"
# The ViCrop baseline is the one module allowed to speak of attention outputs (it needs eager attention weights);
# every other file, adapters included, must not.
ALLOWED = {PACKAGE / "baselines" / "vicrop.py"}


def test_no_source_mentions_output_attentions() -> None:
    """AST scan: no name, attribute, keyword argument or string constant ``output_attentions`` in focus_tool/."""
    hits = []
    for file in sorted(PACKAGE.rglob("*.py")):
        if file in ALLOWED:
            continue
        text = file.read_text()
        if "output_attentions" in text:
            hits.append(f"{file}: text")
        for node in ast.walk(ast.parse(text, filename=str(file))):
            name = (
                node.id
                if isinstance(node, ast.Name)
                else node.attr
                if isinstance(node, ast.Attribute)
                else node.arg
                if isinstance(node, ast.keyword)
                else node.value
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                else None
            )
            if name is not None and "output_attentions" in str(name):
                hits.append(f"{file}:{getattr(node, 'lineno', '?')}")
    assert hits == []


def _llava() -> MLLMAdapter:
    model, processor = tiny_llava(seed=0)
    return LlavaAdapter(model, processor)


def _onevision() -> MLLMAdapter:
    return LlavaOnevisionAdapter(*tiny_onevision(seed=0))


def _qwen() -> MLLMAdapter:
    return Qwen25VLAdapter(*tiny_qwen25vl(seed=0))


def _qwen3() -> MLLMAdapter:
    return Qwen3VLAdapter(*tiny_qwen3vl(seed=0))


def _internvl() -> MLLMAdapter:
    return InternVLAdapter(*tiny_internvl(seed=0))


def _gemma3() -> MLLMAdapter:
    return Gemma3Adapter(*tiny_gemma3(seed=0))


def _smolvlm() -> MLLMAdapter:
    return SmolVLMAdapter(*tiny_smolvlm(seed=0))


@pytest.mark.parametrize(
    "build",
    [_llava, _onevision, _qwen, _qwen3, _internvl, _gemma3, _smolvlm],
    ids=["llava", "onevision", "qwen2.5-vl", "qwen3-vl", "internvl", "gemma3", "smolvlm"],
)
def test_model_calls_never_pass_output_attentions(build: Callable[[], MLLMAdapter]) -> None:
    adapter = build()
    model: Any = adapter.model  # type: ignore[attr-defined]
    calls = {"forward": 0, "modules": 0}
    original = model.forward

    @functools.wraps(original)  # generate() validates kwargs against the forward signature
    def guarded_forward(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("output_attentions"):
            raise AssertionError("output_attentions=True passed to the model")
        calls["forward"] += 1
        return original(*args, **kwargs)

    def guard(_m: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
        if kwargs.get("output_attentions"):
            raise AssertionError(f"output_attentions=True passed to {type(_m).__name__}")
        calls["modules"] += 1

    handles = [m.register_forward_pre_hook(guard, with_kwargs=True) for m in model.modules()]
    model.forward = guarded_forward
    try:
        assert not model.config.output_attentions
        image = noise_image(0, (120, 80))
        pre = adapter.prefill(image, PROMPT, TARGET)
        assert pre.visual_positions
        adapter.yes_no_margins([noise_image(1, (40, 60)), noise_image(2, (90, 30))], [PROMPT, PROMPT])
        adapter.generate(image, "What is the color of the dots on the red card?", max_new_tokens=2)
        adapter.generate(None, "Question: What?", max_new_tokens=2)
        with pytest.raises(AssertionError, match="output_attentions"):  # the guard itself works
            model(input_ids=adapter.tokenizer("hello", return_tensors="pt")["input_ids"], output_attentions=True)
    finally:
        del model.forward
        for h in handles:
            h.remove()
    assert calls["forward"] >= 4 and calls["modules"] > calls["forward"]
