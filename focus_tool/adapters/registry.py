"""Model-type -> adapter table with lazy imports, and the one entry point that loads a checkpoint."""

from __future__ import annotations

import importlib
import json
import logging
import re
from pathlib import Path
from typing import Final

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.errors import ModelLoadError

logger = logging.getLogger(__name__)

_ADAPTERS: Final[dict[str, str]] = {
    "llava": "focus_tool.adapters.llava:LlavaAdapter",
    "llava_onevision": "focus_tool.adapters.llava_onevision:LlavaOnevisionAdapter",
    "qwen2_5_vl": "focus_tool.adapters.qwen2_5_vl:Qwen25VLAdapter",
    "qwen3_vl": "focus_tool.adapters.qwen3_vl:Qwen3VLAdapter",
    "internvl": "focus_tool.adapters.internvl:InternVLAdapter",
    "gemma3": "focus_tool.adapters.gemma3:Gemma3Adapter",
    "smolvlm": "focus_tool.adapters.smolvlm:SmolVLMAdapter",
    "idefics3": "focus_tool.adapters.smolvlm:Idefics3Adapter",  # the SmolVLM v1 checkpoints (SmolVLM-256M-Instruct)
}
# model_type -> (HF class, preset name); what `focus models` lists
_ARCHITECTURES: Final[dict[str, tuple[str, str]]] = {
    "llava": ("LlavaForConditionalGeneration", "llava-1.5"),
    "llava_onevision": ("LlavaOnevisionForConditionalGeneration", "llava-onevision"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "qwen2.5-vl"),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", "qwen3-vl"),
    "internvl": ("InternVLForConditionalGeneration", "internvl"),
    "gemma3": ("Gemma3ForConditionalGeneration", "gemma3"),
    "smolvlm": ("SmolVLMForConditionalGeneration", "smolvlm"),
    "idefics3": ("Idefics3ForConditionalGeneration", "smolvlm"),
}
_WARNED: set[str] = set()  # warn about the flash-attn fallback once per process
_DTYPES: Final[tuple[str, ...]] = ("float32", "float16", "bfloat16")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def supported_model_types() -> list[str]:
    """The ``model_type`` values of checkpoints focus-tool can run."""
    return sorted(_ADAPTERS)


def supported_architectures() -> list[tuple[str, str, str]]:
    """(model_type, transformers class, preset name) of every supported architecture, sorted by model_type."""
    return [(mtype, *_ARCHITECTURES[mtype]) for mtype in supported_model_types()]


def resolve_attn_implementation(requested: str) -> str:
    """``requested``, except "flash_attention_2" without an importable ``flash_attn``: then "sdpa", with a warning."""
    if requested != "flash_attention_2":
        return requested
    try:
        importlib.import_module("flash_attn")
    except (ImportError, OSError, RuntimeError) as e:  # absent, or built against another CUDA/torch
        if not _WARNED:
            logger.warning("flash_attention_2 requested but flash-attn is not importable (%s); using sdpa", e)
            _WARNED.add("flash_attn")
        return "sdpa"
    return requested


def default_model_path() -> Path:
    """The embedded demonstration model shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "embedded" / "model"


def _model_type(path: str) -> str:
    p = Path(path).expanduser()
    if p.exists():
        cfg = p / "config.json"
        if not cfg.is_file():
            raise ModelLoadError(f"{p} has no config.json; point --model at a checkpoint folder in the hub layout")
        try:
            return str(json.loads(cfg.read_text())["model_type"])
        except (ValueError, KeyError) as e:
            raise ModelLoadError(f"{cfg} is not a transformers model config ({e})") from e
    if not _HUB_ID.match(path):
        raise ModelLoadError(f"model path {path} does not exist; give a checkpoint folder or a hub id like org/name")
    try:
        from transformers import AutoConfig

        return str(AutoConfig.from_pretrained(path).model_type)
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"cannot resolve the hub id {path} (not in the local cache, or offline); download it first"
        ) from e


def load_adapter(
    path: str | Path | None = None, *, device: str = "cpu", attn_implementation: str = "sdpa", dtype: str | None = None
) -> MLLMAdapter:
    """Load the checkpoint at ``path`` (default: the embedded model) with the adapter for its architecture."""
    path_str = str(path) if path is not None else str(default_model_path())
    if path is None and not default_model_path().joinpath("config.json").is_file():
        raise ModelLoadError("the embedded model is not installed; pass --model PATH to a LLaVA checkpoint")
    mtype = _model_type(path_str)
    if mtype not in _ADAPTERS:
        raise ModelLoadError(
            f"unsupported architecture {mtype!r} in {path_str}; supported: {', '.join(supported_model_types())}"
        )
    module_name, _, class_name = _ADAPTERS[mtype].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    import torch

    if dtype is not None and dtype not in _DTYPES:
        raise ModelLoadError(f"unsupported dtype {dtype!r}; choose one of: {', '.join(_DTYPES)}")
    torch_dtype = getattr(torch, dtype) if dtype else None
    adapter: MLLMAdapter = cls.from_pretrained(
        path_str, device=device, attn_implementation=resolve_attn_implementation(attn_implementation), dtype=torch_dtype
    )
    return adapter
