"""The status block (issue 17: found / not found / ambiguous per target, how the question was answered, warnings)
reaches an agent on every surface: the MCP text block and structured content, the LangChain content and artifact,
from a fresh run and from the session cache. A scripted engine returns a fixed status: what is checked is the
surfaces' pass-through, not how the pipeline decides it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import TextContent
from PIL import Image

from focus_tool.agent import AgentPolicy, FocusService
from focus_tool.langchain import FocusZoomTool
from focus_tool.result import FocusResult, ResultStatus, ResultWarning, TargetStatus
from mcp_server.server import create_server
from mcp_server.settings import ServerSettings
from tests.agent_support import TARGET, ScriptedEngine

STATUS = ResultStatus(
    question="answered_on_whole_image",
    targets=[TargetStatus(target=TARGET, state="not_found", confidence=0.002, threshold=0.5, regions_above=0)],
    warnings=[ResultWarning(code="nothing_found", message="no region of 'red card' reached P(Yes) 0.5", target=TARGET)],
)


class NotFoundEngine(ScriptedEngine):
    """The scripted engine, with a 'nothing found' status and no selected region."""

    def zoom(self, image: Image.Image, **kwargs: Any) -> FocusResult:
        result = super().zoom(image, **kwargs)
        regions = [r.model_copy(update={"selected": False}) for r in result.regions]
        return result.model_copy(update={"status": STATUS, "regions": regions, "answer_view": "full"})


def _in_text(text: str) -> None:
    """The text block alone (what hosts that drop structured content see) says what to branch on."""
    summary = json.loads(text)
    assert summary["status"] == "answered_on_whole_image", summary
    assert summary["targets_status"] == [{"target": TARGET, "state": "not_found", "confidence": 0.002}]
    assert summary["warnings"] == [f"nothing_found: {STATUS.warnings[0].message}"]
    assert not any(r["used_for_answer"] for r in summary["regions"])


@pytest.mark.anyio
async def test_mcp_text_and_structured_content_carry_the_status(images: Path) -> None:
    server = create_server(ServerSettings(allowed_roots=(images,)), pipeline_factory=lambda _: NotFoundEngine())
    args = {"image_path": str(images / "scene.png"), "question": "What colour is the red card?"}
    async with Client(server, raise_exceptions=True) as client:
        runs = [await client.call_tool("focus_zoom", args) for _ in range(2)]  # a model run, then the cache
    for ok in runs:
        assert not ok.is_error and ok.structured_content is not None
        assert ResultStatus.model_validate(ok.structured_content["status"]) == STATUS
        assert isinstance(ok.content[0], TextContent)
        _in_text(ok.content[0].text)
    assert runs[1].structured_content is not None and runs[1].structured_content["session"]["cache_hit"]


def test_langchain_content_and_artifact_carry_the_status(images: Path) -> None:
    tool = FocusZoomTool(service=FocusService(NotFoundEngine(), AgentPolicy(allowed_roots=(images,))))
    args = {"image_path": str(images / "scene.png"), "question": "What colour is the red card?"}
    for call in ("c1", "c2"):  # a model run, then the cache
        msg = tool.invoke({"type": "tool_call", "name": "focus_zoom", "args": args, "id": call})
        assert msg.status == "success" and msg.artifact.status == STATUS
        _in_text(msg.content[0]["text"])
