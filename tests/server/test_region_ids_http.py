"""Region ids per caller over real HTTP: ``python -m mcp_server`` (streamable HTTP, loopback, the embedded model).

Two MCP sessions interleave ``focus_find`` and ``focus_zoom(region_id=...)`` on one image of an orange and a purple
card: each zoom goes into the box its own session received (ids are fresh per result, so one session's ``r1`` never
names the other's region), a zoom into the one found card stays ``found`` (its overlapping crops are one object),
and a session passing the other's id is refused in one line. A sessionless client (protocol 2026-07-28) chains its
own ids and cannot use a session's.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent

from focus_tool.data import synthetic as syn

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _card(x: float, y: float, color: str) -> syn.Card:
    return syn.Card(xyxy=(x, y, x + 60, y + 60), color=color, pip_color="white", n_pips=3)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The server on 127.0.0.1 with the embedded model; yields (URL, path of the two-card image)."""
    images = tmp_path / "images"
    images.mkdir()
    cards = (_card(150, 300, "orange"), _card(800, 350, "purple"), _card(480, 600, "green"))
    scene = syn.Scene(size_wh=(1024, 768), background=(128, 128, 128), cards=cards, noise_seed=3)
    syn.render(scene).save(images / "cards.png")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", "")}
    args = [sys.executable, "-m", "mcp_server", "--transport", "streamable-http", "--port", str(port)]
    args += ["--allowed-root", str(images), "--log-level", "WARNING"]
    with (tmp_path / "stderr.log").open("w") as errlog:
        proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=errlog)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "stderr.log").read_text()[-2000:]
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    assert time.monotonic() < deadline, "the HTTP server did not start"
                    time.sleep(0.2)
            yield f"http://127.0.0.1:{port}/mcp", str(images / "cards.png")
        finally:
            proc.terminate()
            proc.wait(10)


def _ok(result: CallToolResult) -> dict[str, Any]:
    block = result.content[0]
    assert not result.is_error and result.structured_content is not None, getattr(block, "text", block)
    return result.structured_content


def _refusal(result: CallToolResult) -> str:
    block = result.content[0]
    assert result.is_error and isinstance(block, TextContent)
    return block.text


def _best(found: dict[str, Any]) -> dict[str, Any]:
    (status,) = found["status"]["targets"]
    assert status["state"] == "found", status
    return next(r for r in found["regions"] if r["selected"])


async def test_two_sessions_zoom_into_their_own_regions_and_not_each_others(served: tuple[str, str]) -> None:
    url, image = served
    async with Client(url, mode="legacy") as a, Client(url, mode="legacy") as b:  # two MCP sessions
        found_a = _ok(await a.call_tool("focus_find", {"image_path": image, "target": "orange card"}))
        found_b = _ok(await b.call_tool("focus_find", {"image_path": image, "target": "purple card"}))
        best_a, best_b = _best(found_a), _best(found_b)
        zoom_a = await a.call_tool(
            "focus_zoom",
            {"image_path": image, "question": "How many dots are on the orange card?", "region_id": best_a["id"]},
        )
        crossed = await a.call_tool(
            "focus_find", {"image_path": image, "target": "purple card", "region_id": best_b["id"]}
        )
        zoom_b = await b.call_tool(
            "focus_find", {"image_path": image, "target": "purple card", "region_id": best_b["id"]}
        )
        crossed_back = await b.call_tool(
            "focus_find", {"image_path": image, "target": "orange card", "region_id": best_a["id"]}
        )
    a_ids, b_ids = {r["id"] for r in found_a["regions"]}, {r["id"] for r in found_b["regions"]}
    assert not a_ids & b_ids and all(re.fullmatch(r"[0-9a-f]{7,}-r[0-9]+", i) for i in a_ids | b_ids)
    for zoom, best in ((_ok(zoom_a), best_a), (_ok(zoom_b), best_b)):
        assert zoom["session"]["parent_region_id"] == best["id"]
        assert zoom["session"]["parent_box"] == best["box"]  # the box this session received, not the other's
        x0, y0, x1, y1 = best["box"]
        assert all(
            x0 <= r["box"][0] and r["box"][2] <= x1 and y0 <= r["box"][1] and r["box"][3] <= y1 for r in zoom["regions"]
        )
        (status,) = zoom["status"]["targets"]
        assert status["state"] == "found" and status["regions_above"] == 1, status  # one card, not 'ambiguous'
    for refused, rid in ((crossed, best_b["id"]), (crossed_back, best_a["id"])):
        text = _refusal(refused)
        assert f"region_id '{rid}' is unknown: it was not returned to this caller" in text and "\n" not in text


async def test_a_sessionless_client_chains_its_own_ids_but_not_a_sessions(served: tuple[str, str]) -> None:
    url, image = served
    async with Client(url, mode="legacy") as session:
        theirs = _best(_ok(await session.call_tool("focus_find", {"image_path": image, "target": "purple card"})))
    async with Client(url) as client:  # protocol 2026-07-28: every request on its own, no session
        mine = _best(_ok(await client.call_tool("focus_find", {"image_path": image, "target": "purple card"})))
        inner = await client.call_tool(
            "focus_find", {"image_path": image, "target": "purple card", "region_id": mine["id"]}
        )
        refused = await client.call_tool(
            "focus_find", {"image_path": image, "target": "purple card", "region_id": theirs["id"]}
        )
    assert mine["id"] != theirs["id"] and mine["box"] == theirs["box"]  # a result-cache hit, under fresh ids
    assert _ok(inner)["session"]["parent_box"] == mine["box"]
    assert "is unknown: it was not returned to this caller" in _refusal(refused)
