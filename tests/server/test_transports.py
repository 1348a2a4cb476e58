"""The server over real transports: a stdio subprocess (what desktop hosts launch) and streamable HTTP on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import ImageContent, TextContent

from tests.agent_support import QUESTION, TARGET

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _env() -> dict[str, str]:
    return {
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PATH": os.environ.get("PATH", ""),
    }


async def test_stdio_subprocess(model_dir: Path, images: Path, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server", "--model", str(model_dir), "--allowed-root", str(images)],
        env=_env(),
        cwd=str(tmp_path),
    )
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            ok = await client.call_tool("focus_zoom", {"image_path": str(images / "scene.png"), "question": QUESTION})
            bad = await client.call_tool("focus_zoom", {"image_path": "/etc/passwd", "question": QUESTION})
    log = (tmp_path / "stderr.log").read_text()
    assert {"focus_zoom", "focus_find"} <= names
    assert not ok.is_error, log[-2000:]
    assert isinstance(ok.content[0], TextContent) and json.loads(ok.content[0].text)["image_size"] == [256, 192]
    assert bad.is_error and isinstance(bad.content[0], TextContent) and "outside the allowed" in bad.content[0].text
    assert "model ready" in log  # logging goes to stderr, never to the stdout wire


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


async def test_streamable_http_on_loopback(model_dir: Path, images: Path, tmp_path: Path) -> None:
    port = _free_port()
    args = [sys.executable, "-m", "mcp_server", "--transport", "streamable-http", "--port", str(port)]
    args += ["--model", str(model_dir), "--allowed-root", str(images)]
    with (tmp_path / "stderr.log").open("w") as errlog:
        proc = subprocess.Popen(args, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=errlog)
        try:
            _wait_for_port(port, proc)
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                found = await client.call_tool(
                    "focus_find", {"image_path": str(images / "scene.png"), "target": TARGET}
                )
                region = found.structured_content["regions"][0]["id"] if found.structured_content else ""
                inner = await client.call_tool(
                    "focus_zoom", {"image_path": str(images / "scene.png"), "question": QUESTION, "region_id": region}
                )
        finally:
            proc.terminate()
            proc.wait(10)
    assert not found.is_error, (tmp_path / "stderr.log").read_text()[-2000:]
    assert any(isinstance(b, ImageContent) for b in found.content)
    assert not inner.is_error and inner.structured_content is not None
    assert inner.structured_content["session"]["parent_region_id"] == region
