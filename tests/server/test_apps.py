"""The result view over MCP Apps (``io.modelcontextprotocol/ui``): the tools name the ``ui://`` resource, the
resource is the app, a client that negotiated Apps gets the view payload in ``_meta``, and any other client gets
exactly the content it got before the view existed (SEP-2133: an extension degrades gracefully).
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client import advertise
from mcp.client.stdio import stdio_client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent, TextResourceContents

from focus_tool.agent import FocusService, ZoomOutcome, summary_json
from focus_tool.view import VIEW_META_KEY, app_html, view_payload
from mcp_server.server import VIEW_MAX_SIDE, VIEW_URI, ServerState
from tests.agent_support import QUESTION, TARGET

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.anyio
APPS = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})  # what an Apps host declares (client capabilities)
CALLS = [("focus_zoom", {"question": QUESTION}), ("focus_find", {"target": TARGET})]


def _todays_result(outcome: ZoomOutcome) -> tuple[list[ContentBlock], dict[str, Any]]:
    """What the tools returned before the view existed: JSON text, one JPEG per top crop, the whole result."""
    content: list[ContentBlock] = [TextContent(type="text", text=summary_json(outcome))]
    content += [
        ImageContent(type="image", data=base64.b64encode(jpeg).decode("ascii"), mime_type="image/jpeg")
        for jpeg in outcome.crops_jpeg
    ]
    return content, outcome.result.model_dump(mode="json")


@pytest.fixture
def outcomes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[dict[str, Any], ZoomOutcome]]]:
    """Every ``FocusService.zoom`` the server makes: its keyword arguments and what it returned."""
    seen: list[tuple[dict[str, Any], ZoomOutcome]] = []
    real = FocusService.zoom

    def recording(self: FocusService, **kwargs: Any) -> ZoomOutcome:
        outcome = real(self, **kwargs)
        seen.append((kwargs, outcome))
        return outcome

    monkeypatch.setattr(FocusService, "zoom", recording)
    yield seen


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_name_the_view_and_the_resource_is_the_app(mode: str, server: MCPServer[ServerState]) -> None:
    async with Client(server, mode=mode, raise_exceptions=True) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        read = await client.read_resource(VIEW_URI)
    for name in ("focus_zoom", "focus_find"):
        assert tools[name].meta == {"ui": {"resourceUri": VIEW_URI}}, tools[name].meta
    assert not (tools["focus_allowed_roots"].meta or {}).get("ui")
    assert listed[VIEW_URI].mime_type == APP_MIME_TYPE
    [page] = read.contents
    assert isinstance(page, TextResourceContents)
    assert page.mime_type == APP_MIME_TYPE and page.text == app_html()


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize(("tool", "what"), CALLS)
async def test_without_apps_the_result_is_todays(
    mode: str,
    tool: str,
    what: dict[str, str],
    server: MCPServer[ServerState],
    images: Path,
    outcomes: list[tuple[dict[str, Any], ZoomOutcome]],
) -> None:
    async with Client(server, mode=mode, raise_exceptions=True) as client:
        ok = await client.call_tool(tool, {"image_path": str(images / "scene.png"), **what})
    assert not ok.is_error, ok.content
    [(kwargs, outcome)] = outcomes
    assert kwargs["view_max_side"] == 0 and outcome.view_jpeg is None  # the service cut no view image either
    content, structured = _todays_result(outcome)
    assert ok.content == content and ok.structured_content == structured
    assert VIEW_META_KEY not in (ok.meta or {})


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize(("tool", "what"), CALLS)
async def test_with_apps_the_result_adds_the_view_payload(
    mode: str,
    tool: str,
    what: dict[str, str],
    server: MCPServer[ServerState],
    images: Path,
    outcomes: list[tuple[dict[str, Any], ZoomOutcome]],
) -> None:
    async with Client(server, mode=mode, raise_exceptions=True, extensions=[APPS]) as client:
        ok = await client.call_tool(tool, {"image_path": str(images / "scene.png"), **what})
    assert not ok.is_error, ok.content
    [(kwargs, outcome)] = outcomes
    assert kwargs["view_max_side"] == VIEW_MAX_SIDE and outcome.view_jpeg is not None
    content, structured = _todays_result(outcome)
    assert ok.content == content and ok.structured_content == structured  # the same content, plus the payload
    assert ok.meta is not None
    payload = ok.meta[VIEW_META_KEY]
    assert payload == view_payload(outcome.view_jpeg, outcome.result)
    assert payload["version"] == 1 and payload["image"].startswith("data:image/jpeg;base64,")
    assert payload["image_wh"] == [256, 192] and payload["result"]["image_wh"] == [256, 192]
    assert [r["id"] for r in payload["result"]["regions"]] == [r["id"] for r in structured["regions"]]


async def test_a_region_click_from_the_app_zooms_into_that_region(server: MCPServer[ServerState], images: Path) -> None:
    """What the app sends on a region click (the tool input plus region_id) is an ordinary call with a view."""
    args = {"image_path": str(images / "scene.png"), "question": QUESTION}
    async with Client(server, raise_exceptions=True, extensions=[APPS]) as client:
        first = await client.call_tool("focus_zoom", args)
        assert first.meta is not None
        region = first.meta[VIEW_META_KEY]["result"]["regions"][0]["id"]
        inner = await client.call_tool("focus_zoom", {**args, "region_id": region})
    assert not inner.is_error and inner.meta is not None
    assert inner.meta[VIEW_META_KEY]["result"]["session"]["parent_region_id"] == region


async def test_errors_and_the_roots_tool_carry_no_view(server: MCPServer[ServerState], images: Path) -> None:
    async with Client(server, raise_exceptions=True, extensions=[APPS]) as client:
        bad = await client.call_tool("focus_zoom", {"image_path": "scene.png", "question": QUESTION})
        worse = await client.call_tool("focus_zoom", {"image_path": str(images / "scene.png"), "question": 3})
        roots = await client.call_tool("focus_allowed_roots", {})
    assert bad.is_error and VIEW_META_KEY not in (bad.meta or {})
    assert worse.is_error and isinstance(worse.content[0], TextContent)
    assert "\n" not in worse.content[0].text and "question" in worse.content[0].text  # still one line
    assert not roots.is_error and VIEW_META_KEY not in (roots.meta or {})


def _view(result: CallToolResult) -> dict[str, Any] | None:
    return None if result.meta is None else result.meta.get(VIEW_META_KEY)


@pytest.mark.slow
@pytest.mark.parametrize("apps", [True, False], ids=["apps", "no-apps"])
async def test_over_stdio(apps: bool, model_dir: Path, images: Path, tmp_path: Path) -> None:
    """The official client over stdio (what desktop hosts launch), with and without Apps negotiated."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server", "--model", str(model_dir), "--allowed-root", str(images)],
        env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": os.environ["PATH"]},
        cwd=str(tmp_path),
    )
    args = {"image_path": str(images / "scene.png"), "question": QUESTION}
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), extensions=[APPS] if apps else None) as client:
            zoom = next(t for t in (await client.list_tools()).tools if t.name == "focus_zoom")
            read = await client.read_resource(VIEW_URI)
            ok = await client.call_tool("focus_zoom", args)
    log = (tmp_path / "stderr.log").read_text()[-2000:]
    assert zoom.meta is not None and zoom.meta["ui"]["resourceUri"] == VIEW_URI
    [page] = read.contents
    assert isinstance(page, TextResourceContents) and page.mime_type == APP_MIME_TYPE and page.text == app_html()
    assert not ok.is_error, log
    assert isinstance(ok.content[0], TextContent) and ok.structured_content is not None
    assert all(isinstance(b, ImageContent) for b in ok.content[1:]) and len(ok.content) > 1
    view = _view(ok)
    if apps:
        assert view is not None and view["result"] == ok.structured_content
    else:
        assert view is None
