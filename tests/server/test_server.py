"""The MCP server through the SDK's in-memory Client: tools, content types, structured content, progress, errors."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, ImageContent, TextContent

from focus_tool.agent import AgentResult
from focus_tool.result import FocusResult
from mcp_server.server import ServerState, create_server
from mcp_server.settings import ServerSettings
from tests.agent_support import QUESTION, TARGET

pytestmark = pytest.mark.anyio


def _text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_listed_with_flat_inputs_and_output_schema(mode: str, server: MCPServer[ServerState]) -> None:
    async with Client(server, mode=mode, raise_exceptions=True) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert {"focus_zoom", "focus_find", "focus_allowed_roots"} <= set(tools)
    for name in ("focus_zoom", "focus_find"):
        tool = tools[name]
        assert tool.annotations is not None and tool.annotations.read_only_hint
        text = json.dumps(tool.input_schema)
        assert not any(w in text for w in ("anyOf", "oneOf", "$ref", "$defs"))
        assert tool.output_schema is not None and "session" in tool.output_schema["properties"]
    assert tools["focus_zoom"].input_schema["required"] == ["question"]
    assert tools["focus_find"].input_schema["required"] == ["target"]
    assert "question" not in tools["focus_find"].input_schema["properties"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_zoom_round_trip_with_progress(mode: str, server: MCPServer[ServerState], images: Path) -> None:
    messages: list[str | None] = []
    values: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message)
        values.append(progress)

    async with Client(server, mode=mode, raise_exceptions=True) as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == "focus_zoom")
        ok = await client.call_tool(
            "focus_zoom",
            {"image_path": str(images / "scene.png"), "question": QUESTION, "max_crops": 2},
            progress_callback=on_progress,
        )
    assert not ok.is_error, _text(ok)
    assert isinstance(ok.content[0], TextContent)
    assert all(isinstance(b, ImageContent) and b.mime_type == "image/jpeg" for b in ok.content[1:])
    summary = json.loads(_text(ok))
    assert summary["question"] == QUESTION and summary["image_size"] == [256, 192]
    assert ok.structured_content is not None
    jsonschema.validate(ok.structured_content, tool.output_schema)
    jsonschema.validate(ok.structured_content, FocusResult.model_json_schema())
    FocusResult.model_validate(ok.structured_content)
    steps = [m for m in messages if m is not None and "(" not in m]  # without the "<step> (N s)" heartbeats
    assert steps[:2] == ["running FOCUS", "targets"] and steps[-2:] == ["answer", "done"], messages
    assert all(m.startswith("search ") for m in steps[2:-2]), messages  # one per extracted target (may be none)
    assert values == sorted(values) and len(set(values)) == len(values)  # strictly increasing


async def test_find_reports_each_step_and_a_cache_hit_only_done(server: MCPServer[ServerState], images: Path) -> None:
    runs: list[list[str | None]] = [[], []]

    def recorder(messages: list[str | None]) -> Any:
        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            messages.append(message)

        return on_progress

    args = {"image_path": str(images / "scene.png"), "target": TARGET}
    async with Client(server, raise_exceptions=True) as client:
        for messages in runs:
            assert not (await client.call_tool("focus_find", args, progress_callback=recorder(messages))).is_error
    first, repeat = ([m for m in run if m is not None and "(" not in m] for run in runs)
    assert first == ["running FOCUS", "targets", f"search {TARGET}", "regions", "done"]
    assert repeat == ["running FOCUS", "done"]  # the session cache answered: no model step ran


async def test_find_then_zoom_inside_a_region(server: MCPServer[ServerState], images: Path) -> None:
    path = str(images / "scene.png")
    async with Client(server, raise_exceptions=True) as client:
        first = await client.call_tool("focus_find", {"image_path": path, "target": TARGET})
        assert not first.is_error, _text(first)
        assert len(first.content) >= 2 and isinstance(first.content[1], ImageContent)
        found = AgentResult.model_validate(first.structured_content)
        assert found.answer is None and found.regions and found.session.cache_hit is False
        again = await client.call_tool("focus_find", {"image_path": path, "target": TARGET})
        repeat = AgentResult.model_validate(again.structured_content)
        assert repeat.session.cache_hit and repeat.session.forward_passes_saved > 0
        inner = await client.call_tool(
            "focus_zoom", {"image_path": path, "question": QUESTION, "region_id": found.regions[0].id}
        )
    assert not inner.is_error, _text(inner)
    zoomed = AgentResult.model_validate(inner.structured_content)
    assert zoomed.session.parent_region_id == found.regions[0].id
    assert zoomed.image_wh == (256, 192)
    assert zoomed.session.parent_box is not None
    x0, y0, x1, y1 = zoomed.session.parent_box
    assert all(x0 <= r.box[0] and r.box[2] <= x1 and y0 <= r.box[1] and r.box[3] <= y1 for r in zoomed.regions)


async def test_base64_input(server: MCPServer[ServerState], images: Path) -> None:
    b64 = base64.b64encode((images / "scene.png").read_bytes()).decode()
    async with Client(server, raise_exceptions=True) as client:
        ok = await client.call_tool("focus_find", {"image_base64": b64, "target": TARGET, "max_crops": 1})
    assert not ok.is_error, _text(ok)
    assert sum(isinstance(b, ImageContent) for b in ok.content) <= 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"image_path": "scene.png"}, "must be an absolute path"),
        ({}, "exactly one of image_path"),
        ({"image_path": "IMG", "region_id": "r42"}, "region_id 'r42' is unknown"),
        ({"image_path": "IMG", "max_crops": 9}, "max_crops must be an integer between 1 and 8, got 9"),
    ],
)
async def test_bad_input_is_a_readable_tool_error(
    server: MCPServer[ServerState], images: Path, args: dict[str, Any], fragment: str
) -> None:
    args = {"question": QUESTION, **{k: (str(images / "scene.png") if v == "IMG" else v) for k, v in args.items()}}
    async with Client(server) as client:
        bad = await client.call_tool("focus_zoom", args)
        good = await client.call_tool("focus_zoom", {"image_path": str(images / "scene.png"), "question": QUESTION})
    assert bad.is_error and fragment in _text(bad)
    assert not good.is_error


async def test_no_structured_output_mode(settings: ServerSettings, pipeline: Any, images: Path) -> None:
    from dataclasses import replace

    server = create_server(
        replace(settings, structured_output=False, return_images=False), pipeline_factory=lambda _: pipeline
    )
    async with Client(server, raise_exceptions=True) as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == "focus_find")
        ok = await client.call_tool("focus_find", {"image_path": str(images / "scene.png"), "target": TARGET})
    assert tool.output_schema is None
    assert ok.structured_content is None and [b.type for b in ok.content] == ["text"]


async def test_handshake_does_not_wait_for_the_model(settings: ServerSettings, pipeline: Any, images: Path) -> None:
    release = threading.Event()

    def slow_factory(_: ServerSettings) -> Any:
        release.wait(10)
        return pipeline

    messages: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message)
        release.set()  # let the load finish once the first heartbeat arrived

    server = create_server(settings, pipeline_factory=slow_factory)
    async with Client(server, mode="legacy", raise_exceptions=True) as client:
        assert (await client.list_tools()).tools  # answered while the model is still loading
        ok = await client.call_tool(
            "focus_find", {"image_path": str(images / "scene.png"), "target": TARGET}, progress_callback=on_progress
        )
    assert not ok.is_error
    assert messages[0] is not None and messages[0].startswith("loading model")


async def test_load_failure_is_reported(settings: ServerSettings, images: Path) -> None:
    def broken(_: ServerSettings) -> Any:
        from focus_tool.errors import ModelLoadError

        raise ModelLoadError("no config.json in /nowhere")

    async with Client(create_server(settings, pipeline_factory=broken)) as client:
        bad = await client.call_tool("focus_find", {"image_path": str(images / "scene.png"), "target": TARGET})
    assert bad.is_error and "failed to load" in _text(bad) and "no config.json" in _text(bad)


async def test_text_and_structured_content_carry_every_field(server: MCPServer[ServerState], images: Path) -> None:
    """The server formats and never filters: structured content is the whole AgentResult (every FocusResult field,
    the status block among them) and the text block has every key of the service's summary_json."""
    from focus_tool.agent import AgentPolicy, FocusService, summary_json
    from tests.agent_support import ScriptedEngine

    args = {"image_path": str(images / "scene.png"), "question": QUESTION}
    async with Client(server, raise_exceptions=True) as client:
        ok = await client.call_tool("focus_zoom", args)
    assert not ok.is_error and ok.structured_content is not None
    assert set(ok.structured_content) == set(AgentResult.model_fields)
    reference = FocusService(ScriptedEngine(), AgentPolicy(allowed_roots=(images,))).zoom(**args)
    assert set(json.loads(_text(ok))) == set(json.loads(summary_json(reference)))
