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

# The one per-backbone table: model_type -> the adapter class, or "module:Class" imported on first use. The HF class
# and the preset name are read from the adapter (``model_class_name``, ``preset_name``); add a backbone here (built-in)
# or with :func:`register_backbone` (third party).
_BACKBONES: dict[str, str | type[MLLMAdapter]] = {
    "llava": "focus_tool.adapters.llava:LlavaAdapter",
    "llava_onevision": "focus_tool.adapters.llava_onevision:LlavaOnevisionAdapter",
    "qwen2_5_vl": "focus_tool.adapters.qwen2_5_vl:Qwen25VLAdapter",
    "qwen3_vl": "focus_tool.adapters.qwen3_vl:Qwen3VLAdapter",
    "internvl": "focus_tool.adapters.internvl:InternVLAdapter",
    "gemma3": "focus_tool.adapters.gemma3:Gemma3Adapter",
    "smolvlm": "focus_tool.adapters.smolvlm:SmolVLMAdapter",
    "idefics3": "focus_tool.adapters.smolvlm:Idefics3Adapter",  # the SmolVLM v1 checkpoints (SmolVLM-256M-Instruct)
}
_WARNED: set[str] = set()  # warn about the flash-attn fallback once per process
_DTYPES: Final[tuple[str, ...]] = ("float32", "float16", "bfloat16")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def register_backbone(model_type: str, adapter: str | type[MLLMAdapter], *, replace: bool = False) -> None:
    """Register the adapter for checkpoints whose ``config.json`` has ``model_type``.

    Args:
        model_type: The transformers ``model_type`` of the checkpoints the adapter runs.
        adapter: The adapter class, or ``"module:Class"`` imported when a checkpoint of that type is loaded. The class
            declares ``preset_name`` (a name in :data:`focus_tool.presets.PRESETS`, see
            :func:`focus_tool.presets.register_preset`) and ``model_class_name`` (the transformers class).
        replace: Allow replacing the adapter already registered for ``model_type``.

    Raises:
        ValueError: ``model_type`` is taken and ``replace`` is false, or ``adapter`` is a malformed string.
    """
    if model_type in _BACKBONES and not replace:
        raise ValueError(f"backbone {model_type!r} is already registered ({_BACKBONES[model_type]}); pass replace=True")
    if isinstance(adapter, str) and not re.match(r"^[\w.]+:\w+$", adapter):
        raise ValueError(f"adapter {adapter!r} must be a class or 'module:Class'")
    _BACKBONES[model_type] = adapter


def unregister_backbone(model_type: str) -> None:
    """Remove the backbone ``model_type`` (a no-op when it is not registered); for plugins' tests."""
    _BACKBONES.pop(model_type, None)


def adapter_class(model_type: str) -> type[MLLMAdapter]:
    """The adapter class registered for ``model_type`` (imported on first use).

    Raises:
        ModelLoadError: no adapter is registered for ``model_type``, or its module cannot be imported.
    """
    if model_type not in _BACKBONES:
        raise ModelLoadError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(supported_model_types())}"
        )
    entry = _BACKBONES[model_type]
    if isinstance(entry, str):
        module_name, _, class_name = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as e:
            raise ModelLoadError(f"cannot import the adapter {entry} for {model_type!r}: {e}") from e
    if not (isinstance(entry, type) and issubclass(entry, MLLMAdapter)):
        raise ModelLoadError(f"the adapter registered for {model_type!r} is not an MLLMAdapter subclass: {entry!r}")
    return entry


def supported_model_types() -> list[str]:
    """The ``model_type`` values of checkpoints focus-tool can run."""
    return sorted(_BACKBONES)


def supported_architectures() -> list[tuple[str, str, str]]:
    """(model_type, transformers class, preset name) of every supported architecture, sorted by model_type."""
    rows = []
    for mtype in supported_model_types():
        cls = adapter_class(mtype)
        rows.append((mtype, cls.model_class_name, cls.preset_name))
    return rows


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
    if mtype not in _BACKBONES:
        raise ModelLoadError(
            f"unsupported architecture {mtype!r} in {path_str}; supported: {', '.join(supported_model_types())}"
        )
    from_pretrained = getattr(adapter_class(mtype), "from_pretrained", None)  # adapters that load checkpoints
    if from_pretrained is None:
        raise ModelLoadError(f"the adapter for {mtype!r} has no from_pretrained; it cannot load {path_str}")
    import torch

    if dtype is not None and dtype not in _DTYPES:
        raise ModelLoadError(f"unsupported dtype {dtype!r}; choose one of: {', '.join(_DTYPES)}")
    torch_dtype = getattr(torch, dtype) if dtype else None
    adapter: MLLMAdapter = from_pretrained(
        path_str, device=device, attn_implementation=resolve_attn_implementation(attn_implementation), dtype=torch_dtype
    )
    return adapter
