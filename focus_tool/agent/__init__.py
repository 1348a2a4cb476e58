"""The engine layer behind the agent surfaces (LangChain tool, MCP server).

Modules: :mod:`~focus_tool.agent.policy` (what is accepted, the input checks), :mod:`~focus_tool.agent.wire`
(result and summary types), :mod:`~focus_tool.agent.render` (crops, results mapped back from a crop),
:mod:`~focus_tool.agent.cache` (session cache), :mod:`~focus_tool.agent.gate` (one inference at a time) and
:mod:`~focus_tool.agent.service` (:class:`FocusService`, the one call both surfaces make).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from focus_tool.agent.cache import SessionCache
    from focus_tool.agent.gate import InferenceGate, ServiceBusy
    from focus_tool.agent.policy import (
        DEFAULT_CROPS,
        SAFE_FORMATS,
        AgentPolicy,
        ImageSource,
        LoadedImage,
        check_path,
        decode_base64,
        decode_image,
        open_image,
        read_source,
    )
    from focus_tool.agent.render import crop_jpegs, shift_result, top_regions
    from focus_tool.agent.service import FocusService, ProgressFn, Zoomable
    from focus_tool.agent.wire import AgentResult, SessionInfo, ZoomOutcome, summary_json

_HOME: dict[str, str] = {  # name -> its module, imported on first use: ``focus --help`` imports no torch
    "AgentPolicy": "focus_tool.agent.policy",
    "AgentResult": "focus_tool.agent.wire",
    "DEFAULT_CROPS": "focus_tool.agent.policy",
    "FocusService": "focus_tool.agent.service",
    "ImageSource": "focus_tool.agent.policy",
    "InferenceGate": "focus_tool.agent.gate",
    "LoadedImage": "focus_tool.agent.policy",
    "ProgressFn": "focus_tool.agent.service",
    "SAFE_FORMATS": "focus_tool.agent.policy",
    "ServiceBusy": "focus_tool.agent.gate",
    "SessionCache": "focus_tool.agent.cache",
    "SessionInfo": "focus_tool.agent.wire",
    "ZoomOutcome": "focus_tool.agent.wire",
    "Zoomable": "focus_tool.agent.service",
    "check_path": "focus_tool.agent.policy",
    "crop_jpegs": "focus_tool.agent.render",
    "decode_base64": "focus_tool.agent.policy",
    "decode_image": "focus_tool.agent.policy",
    "open_image": "focus_tool.agent.policy",
    "read_source": "focus_tool.agent.policy",
    "shift_result": "focus_tool.agent.render",
    "summary_json": "focus_tool.agent.wire",
    "top_regions": "focus_tool.agent.render",
}

__all__ = [
    "DEFAULT_CROPS",
    "SAFE_FORMATS",
    "AgentPolicy",
    "AgentResult",
    "FocusService",
    "ImageSource",
    "InferenceGate",
    "LoadedImage",
    "ProgressFn",
    "ServiceBusy",
    "SessionCache",
    "SessionInfo",
    "ZoomOutcome",
    "Zoomable",
    "check_path",
    "crop_jpegs",
    "decode_base64",
    "decode_image",
    "open_image",
    "read_source",
    "shift_result",
    "summary_json",
    "top_regions",
]


def __getattr__(name: str) -> Any:
    """Import a name's module on first use: the service module imports the pipeline, and with it torch."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
