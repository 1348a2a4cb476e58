"""URL inputs under load (issue 17, check 6): with ``--allow-urls --url-timeout 4`` (and ``--allow-private-urls`` for
the loopback servers), slow-redirect and drip servers are cut at <= 5 s, and a local call made meanwhile is answered
in under 2 s, although 40 slow URLs arrive at once (they once held every worker thread). A scripted fast engine
stands in for the model: what is measured is the server's plumbing, not inference."""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent

from mcp_server.server import create_server
from mcp_server.settings import add_server_arguments, settings_from_args
from tests.agent_support import TARGET, ScriptedEngine
from tests.http_images import ImageServer, Route, serve_routes

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def slow_web(images: Path) -> Iterator[ImageServer]:
    png = (images / "scene.png").read_bytes()
    routes = {f"/hop/{i}": Route(status=302, location=f"/hop/{i + 1}", delay_s=1.5) for i in range(5)}
    routes["/hop/5"] = Route(body=png, delay_s=1.5)  # 6 hops of 1.5 s: each in time, 9 s in all
    routes["/drip.png"] = Route(body=png, drip_s=0.5)  # one byte per 0.5 s
    with serve_routes(routes) as server:
        yield server


def _text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def test_slow_urls_are_cut_and_a_local_call_is_served_meanwhile(images: Path, slow_web: ImageServer) -> None:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    flags = ["--allow-urls", "--url-timeout", "4", "--allow-private-urls", "--allowed-root", str(images)]
    settings = settings_from_args(parser.parse_args(flags))
    assert settings.url_workers == 4
    server = create_server(settings, pipeline_factory=lambda _: ScriptedEngine())
    slow: list[tuple[float, CallToolResult]] = []
    local: list[tuple[float, CallToolResult]] = []
    b64 = base64.b64encode((images / "scene.png").read_bytes()).decode()

    async def call(args: dict[str, Any], into: list[tuple[float, CallToolResult]], client: Client) -> None:
        t0 = time.monotonic()
        result = await client.call_tool("focus_find", {"target": TARGET, **args})
        into.append((time.monotonic() - t0, result))

    async with Client(server) as client:
        await call({"image_base64": b64}, local, client)  # the model is loaded before the clock starts
        local.clear()
        async with anyio.create_task_group() as calls:
            for i in range(40):
                url = slow_web.url("/hop/0" if i % 2 == 0 else "/drip.png")
                calls.start_soon(call, {"image_path": url}, slow, client)
            await anyio.sleep(0.5)  # the downloads are under way
            await call({"image_base64": b64}, local, client)
            await call({"image_path": str(images / "scene.png")}, local, client)
    assert len(local) == 2 and all(not r.is_error for _, r in local), [_text(r) for _, r in local]
    assert max(s for s, _ in local) < 2.0, [s for s, _ in local]
    cut = [(s, _text(r)) for s, r in slow if "took longer than 4 s" in _text(r)]
    busy = [(s, _text(r)) for s, r in slow if "image downloads are already running" in _text(r)]
    assert all(r.is_error for _, r in slow) and len(cut) + len(busy) == 40, [_text(r) for _, r in slow]
    assert len(cut) == 4  # the pool: 4 downloads at once, the rest refused at once
    assert all(3.5 <= s <= 5.0 for s, _ in cut), cut
    assert all(s < 2.0 for s, _ in busy), busy
    assert any("hop" in t for _, t in cut) and any("drip" in t for _, t in cut)  # both kinds of slow server
