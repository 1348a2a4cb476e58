"""Registry and CLI surface of the multi-architecture support: `focus models`, unsupported architectures, the
flash-attn fallback and --dtype."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from focus_tool.adapters import registry
from focus_tool.adapters.registry import load_adapter, supported_architectures
from focus_tool.cli import main
from focus_tool.errors import ModelLoadError
from focus_tool.presets import PRESETS
from tests.tiny_models import save_tiny_qwen25vl


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_qwen25vl(tmp_path_factory.mktemp("qwen") / "qwen")


def test_focus_models_lists_every_architecture_with_its_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for mtype, hf_class, preset in supported_architectures():
        assert preset in PRESETS
        line = next(line for line in out.splitlines() if line.startswith(mtype + " "))
        assert hf_class in line and preset in line
    assert {m for m, _, _ in supported_architectures()} == {
        "llava",
        "llava_onevision",
        "qwen2_5_vl",
        "qwen3_vl",
        "gemma3",
        "internvl",
        "smolvlm",
        "idefics3",
    }
    assert "layers [21, 28)" in out


def test_unsupported_architecture_names_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mllama"}))
    with pytest.raises(ModelLoadError, match=r"unsupported architecture 'mllama'.*llava, llava_onevision.*smolvlm"):
        load_adapter(tmp_path)


def test_flash_attention_falls_back_to_sdpa_with_one_warning(
    saved: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_WARNED", set())
    monkeypatch.setitem(__import__("sys").modules, "flash_attn", None)  # import fails even if installed
    with caplog.at_level(logging.WARNING, logger="focus_tool.adapters.registry"):
        first = load_adapter(saved, attn_implementation="flash_attention_2")
        second = load_adapter(saved, attn_implementation="flash_attention_2")
    assert first.attn_implementation == second.attn_implementation == "sdpa"
    warnings = [r for r in caplog.records if "flash" in r.getMessage()]
    assert len(warnings) == 1 and "sdpa" in warnings[0].getMessage()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_dtype_is_applied(saved: Path, dtype: str) -> None:
    adapter = load_adapter(saved, dtype=dtype)
    assert next(adapter.model.parameters()).dtype == getattr(torch, dtype)  # type: ignore[attr-defined]


def test_unknown_dtype_is_rejected(saved: Path) -> None:
    with pytest.raises(ModelLoadError, match="float32, float16, bfloat16"):
        load_adapter(saved, dtype="int8")
