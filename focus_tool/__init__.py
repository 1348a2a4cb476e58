"""focus-tool: training-free zoom-in for multimodal LLMs (FOCUS). Importing it loads no model and no torch."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from focus_tool.config import AnswerConfig, FocusConfig, ProposalConfig, RankConfig, RelevanceConfig, TargetConfig
from focus_tool.errors import ConfigError, FocusError, InputRejected, ModelLoadError, TargetNotPlaced
from focus_tool.grid import PatchGrid
from focus_tool.result import FocusResult, ForwardPasses, Region, RelevanceMapOut

try:
    __version__ = version("focus-tool")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AnswerConfig",
    "ConfigError",
    "FocusConfig",
    "FocusError",
    "FocusResult",
    "ForwardPasses",
    "InputRejected",
    "ModelLoadError",
    "PatchGrid",
    "ProposalConfig",
    "RankConfig",
    "Region",
    "RelevanceConfig",
    "RelevanceMapOut",
    "TargetConfig",
    "TargetNotPlaced",
    "__version__",
]
