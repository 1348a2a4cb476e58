"""Refusals through the MCP server: each bad input gets a clear tool error, and the server keeps serving."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.types import TextContent

from mcp_server.server import ServerState
from tests.agent_support import TARGET
from tests.bad_inputs import write_huge_header_png, write_png, write_text_as_png

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
