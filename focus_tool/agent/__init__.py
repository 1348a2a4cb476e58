"""The engine layer behind the agent surfaces (LangChain tool, MCP server).

Modules: :mod:`~focus_tool.agent.policy` (what is accepted, the input checks), :mod:`~focus_tool.agent.wire`
(result and summary types), :mod:`~focus_tool.agent.render` (crops, results mapped back from a crop),
:mod:`~focus_tool.agent.cache` (session cache), :mod:`~focus_tool.agent.gate` (one inference at a time) and
:mod:`~focus_tool.agent.service` (:class:`FocusService`, the one call both surfaces make).
"""

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
