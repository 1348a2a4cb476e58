"""The one backbone table: every registered adapter names its presets, and the registration extension points."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from focus_tool.adapters import registry
from focus_tool.adapters.base import MLLMAdapter
from focus_tool.adapters.registry import adapter_class, register_backbone, supported_model_types
from focus_tool.baselines.zoomeye import ZOOMEYE_PRESETS
from focus_tool.config import FocusConfig
from focus_tool.errors import ConfigError, ModelLoadError
from focus_tool.presets import PRESETS, config_for, register_preset


@pytest.fixture
def clean_tables() -> Iterator[None]:
    backbones, presets = dict(registry._BACKBONES), dict(PRESETS)
    yield
    registry._BACKBONES.clear()
    registry._BACKBONES.update(backbones)
    PRESETS.clear()
    PRESETS.update(presets)


@pytest.mark.parametrize("model_type", supported_model_types())
def test_every_backbone_declares_a_registered_preset(model_type: str) -> None:
    cls = adapter_class(model_type)
    assert cls.preset_name != MLLMAdapter.preset_name, f"{cls.__name__} keeps the generic preset"
    assert cls.preset_name in PRESETS
    assert cls.model_class_name.endswith("ForConditionalGeneration")
    assert cls.preset_name in ZOOMEYE_PRESETS


def test_every_preset_has_a_zoomeye_row() -> None:
    # generic backbones carry an explicit ZoomEyeConfig(); a missing row is a ConfigError, never a silent default
    assert set(ZOOMEYE_PRESETS) == set(PRESETS)


class _ToyAdapter(MLLMAdapter):
    preset_name = "toy"
    model_class_name = "ToyForConditionalGeneration"


@pytest.mark.usefixtures("clean_tables")
def test_register_backbone_and_preset() -> None:
    register_preset("toy", PRESETS["default"])
    register_backbone("toy_vl", _ToyAdapter)
    assert "toy_vl" in supported_model_types()
    assert ("toy_vl", "ToyForConditionalGeneration", "toy") in registry.supported_architectures()
    assert adapter_class("toy_vl") is _ToyAdapter
    register_backbone("toy_vl", "focus_tool.adapters.llava:LlavaAdapter", replace=True)
    assert adapter_class("toy_vl").__name__ == "LlavaAdapter"


@pytest.mark.usefixtures("clean_tables")
def test_registration_refuses_duplicates_and_bad_entries() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("llava", _ToyAdapter)
    with pytest.raises(ValueError, match="module:Class"):
        register_backbone("toy_vl", "not a path")
    with pytest.raises(ConfigError, match="already registered"):
        register_preset("default", FocusConfig())
    with pytest.raises(ConfigError, match="FocusConfig"):
        register_preset("toy", {"k": 1})  # type: ignore[arg-type]
    register_backbone("broken_vl", "focus_tool.adapters.nowhere:Nothing")
    with pytest.raises(ModelLoadError, match="cannot import"):
        adapter_class("broken_vl")
    with pytest.raises(ModelLoadError, match="unsupported architecture"):
        adapter_class("absent_vl")


def test_config_for_refuses_an_unregistered_preset(tmp_path: Path) -> None:
    adapter = SimpleNamespace(model_id=str(tmp_path), preset_name="not-a-preset", num_layers=4)
    with pytest.raises(ConfigError, match=r"not-a-preset.*known: "):
        config_for(cast(MLLMAdapter, adapter))
