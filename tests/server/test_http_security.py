"""DNS-rebinding protection over real HTTP (issue 17, check 5): ``python -m mcp_server`` on 127.0.0.2 and on the
spelled-out IPv6 loopback ``0:0:0:0:0:0:0:1``. The SDK switches its Host / Origin checks on by itself only for the
literal hosts 127.0.0.1, localhost and ::1, so on these binds they were off (a foreign Host and Origin got 200); the
server now always passes allow-lists built from the bound address. A foreign Host gets 421, a foreign Origin 403,
and proper requests (initialize, then a tool call through the SDK client) are served.

The model is never needed: ``--model`` names a folder that does not exist (its load fails in the background) and
the tool called is ``focus_allowed_roots``, which does not touch the model.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.anyio
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def _can_bind(family: socket.AddressFamily, host: str) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def _free_port(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serving(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """Start the server on the parametrised host (as given on the command line); yield (URL host, port)."""
    given: str = request.param
    family = socket.AF_INET6 if ":" in given else socket.AF_INET
    connect = "::1" if family == socket.AF_INET6 else given
    if not _can_bind(family, connect):
        pytest.skip(f"this machine cannot bind {connect} (no {'IPv6' if ':' in given else 'IPv4'} loopback)")
    port = _free_port(family, connect)
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", "")}
    args = [sys.executable, "-m", "mcp_server", "--transport", "streamable-http", "--host", given]
    args += ["--port", str(port), "--model", str(tmp_path / "no-model"), "--log-level", "WARNING"]
    with (tmp_path / "stderr.log").open("w") as errlog:
        proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=errlog)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "stderr.log").read_text()[-2000:]
                try:
                    with socket.create_connection((connect, port), timeout=0.5):
                        break
                except OSError:
                    assert time.monotonic() < deadline, "the HTTP server did not start"
                    time.sleep(0.2)
            yield (f"[{connect}]" if family == socket.AF_INET6 else connect), port
        finally:
            proc.terminate()
            proc.wait(10)


def _post(host: str, port: int, **headers: str) -> int:
    """POST an initialize request; returns the HTTP status. ``Host`` defaults to ``host:port``."""
    conn = http.client.HTTPConnection(host.strip("[]"), port, timeout=10.0)
    try:
        conn.request("POST", "/mcp", json.dumps(INITIALIZE), {"Host": f"{host}:{port}", **MCP_HEADERS, **headers})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize("serving", ["127.0.0.2", "0:0:0:0:0:0:0:1"], indirect=True)
async def test_foreign_host_421_foreign_origin_403_proper_requests_served(serving: tuple[str, int]) -> None:
    host, port = serving
    url = f"http://{host}:{port}/mcp"
    ipv6 = host.startswith("[")
    other_spelling = "[0:0:0:0:0:0:0:1]" if ipv6 else "127.0.0.1"  # ipv6: the same address; ipv4: another one
    assert _post(host, port, Host="attacker.example") == 421
    assert _post(host, port, Host=f"attacker.example:{port}") == 421
    assert _post(host, port, Host=f"{host}:{port + 1}") == 421  # the bound address, another port
    assert _post(host, port, Origin="http://attacker.example") == 403
    assert _post(host, port, Origin=f"http://attacker.example:{port}") == 403
    assert _post(host, port, Origin=f"https://{host}:{port}") == 403  # not the scheme this server speaks
    assert _post(host, port) == 200
    assert _post(host, port, Origin=f"http://{host}:{port}") == 200
    assert _post(host, port, Host=f"localhost:{port}", Origin=f"http://localhost:{port}") == 200
    if ipv6:
        assert _post(host, port, Host=f"{other_spelling}:{port}", Origin=f"http://{other_spelling}:{port}") == 200
    else:
        assert _post(host, port, Host=f"{other_spelling}:{port}") == 421  # 127.0.0.1 is not the bound 127.0.0.2
    async with Client(url) as client:  # a whole session through the SDK client, after the refusals
        roots = await client.call_tool("focus_allowed_roots", {})
    assert not roots.is_error and roots.structured_content is not None
    assert roots.structured_content["allowed_roots"] == []
