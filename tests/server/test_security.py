"""Refusals through the MCP server: each bad input gets a clear tool error, and the server keeps serving; URLs."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.types import TextContent

from focus_tool.pipeline import FocusPipeline
from mcp_server.server import ServerState, create_server
from mcp_server.settings import ServerSettings
from tests.agent_support import TARGET
from tests.bad_inputs import write_huge_header_png, write_png, write_text_as_png
from tests.http_images import ImageServer, Route, serve_routes

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def traps(tmp_path_factory: pytest.TempPathFactory, images: Path) -> dict[str, str]:
    """Files outside the allowed root, a symlink escaping it, a bomb header, text bytes named .png."""
    outside = tmp_path_factory.mktemp("outside")
    secret = write_png(outside / "secret.png")
    link = images / "escape.png"
    if not link.exists():
        link.symlink_to(secret)
    bomb = write_huge_header_png(images / "bomb.png", 20_000, 20_000)
    big = write_huge_header_png(images / "big.png", 3_000, 3_000)
    text = write_text_as_png(images / "text.png")
    return {
        "traversal": str(images / ".." / ".." / outside.name / "secret.png"),
        "symlink": str(link),
        "bomb": str(bomb),
        "big": str(big),
        "text": str(text),
        "text_b64": base64.b64encode(text.read_bytes()).decode(),
    }


CASES = [
    ("traversal", {"image_path": "@traversal"}, "outside the allowed folders"),
    ("symlink escape", {"image_path": "@symlink"}, "outside the allowed folders"),
    ("relative path", {"image_path": "images/scene.png"}, "must be an absolute path"),
    ("oversized base64", {"image_base64": "A" * 300_000}, "image_base64 is 300,000 characters; the limit is"),
    ("bomb header", {"image_path": "@bomb"}, "too many pixels to decode safely"),
    ("over the pixel cap", {"image_path": "@big"}, "the limit is 4,000,000 px"),
    ("non-image bytes", {"image_path": "@text"}, "not a supported image"),
    ("non-image base64", {"image_base64": "@text_b64"}, "not a supported image"),
    ("URL", {"image_path": "http://169.254.169.254/latest/meta-data"}, "URL inputs are disabled"),
    ("file URL", {"image_path": "file:///etc/passwd"}, "URL inputs are disabled"),
    ("system file", {"image_path": "/etc/passwd"}, "outside the allowed folders"),
]


@pytest.mark.parametrize(("name", "args", "fragment"), CASES, ids=[c[0] for c in CASES])
async def test_refused_and_still_serving(
    server: MCPServer[ServerState], images: Path, traps: dict[str, str], name: str, args: dict[str, Any], fragment: str
) -> None:
    args = {k: (traps[v[1:]] if v.startswith("@") else v) for k, v in args.items()}
    async with Client(server) as client:
        bad = await client.call_tool("focus_find", {"target": TARGET, **args})
        good = await client.call_tool("focus_find", {"target": TARGET, "image_path": str(images / "scene.png")})
    assert bad.is_error
    assert isinstance(bad.content[0], TextContent)
    assert fragment in bad.content[0].text
    assert "Traceback" not in bad.content[0].text
    assert not good.is_error


@pytest.fixture(scope="module")
def web(images: Path) -> Iterator[ImageServer]:
    with serve_routes({"/scene.png": Route(body=(images / "scene.png").read_bytes())}) as server:
        yield server


async def test_urls_when_the_server_allows_them(
    settings: ServerSettings, pipeline: FocusPipeline, web: ImageServer
) -> None:
    on = replace(settings, allow_urls=True, url_allow_private=True, url_timeout_s=5.0)
    server = create_server(on, pipeline_factory=lambda _: pipeline)
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        ok = await client.call_tool("focus_find", {"target": TARGET, "image_path": web.url("/scene.png")})
        missing = await client.call_tool("focus_find", {"target": TARGET, "image_path": web.url("/gone.png")})
        local = await client.call_tool("focus_find", {"target": TARGET, "image_path": "file:///etc/passwd"})
        limits = await client.call_tool("focus_allowed_roots", {})
    assert not ok.is_error and ok.structured_content is not None
    assert ok.structured_content["image_wh"] == [256, 192]
    assert missing.is_error and isinstance(missing.content[0], TextContent) and "HTTP 404" in missing.content[0].text
    assert local.is_error and isinstance(local.content[0], TextContent)
    assert "only http:// and https://" in local.content[0].text
    assert limits.structured_content is not None and "allowed as image_path" in limits.structured_content["urls"]
    annotations = tools["focus_zoom"].annotations
    assert annotations is not None and annotations.open_world_hint is True


async def test_public_only_by_default_when_urls_are_allowed(
    settings: ServerSettings, pipeline: FocusPipeline, web: ImageServer
) -> None:
    server = create_server(replace(settings, allow_urls=True), pipeline_factory=lambda _: pipeline)
    async with Client(server) as client:
        bad = await client.call_tool("focus_find", {"target": TARGET, "image_path": web.url("/scene.png")})
    assert bad.is_error and isinstance(bad.content[0], TextContent)
    assert "non-public address (127.0.0.1)" in bad.content[0].text
