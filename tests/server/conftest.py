"""Fixtures of the MCP server tests: one tiny pipeline per session, a fresh server (fresh session cache) per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.server.mcpserver import MCPServer

from focus_tool.pipeline import FocusPipeline
from mcp_server.server import ServerState, create_server
from mcp_server.settings import ServerSettings
from tests.agent_support import image_dir, tiny_pipeline


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import save_tiny_llava

    return save_tiny_llava(tmp_path_factory.mktemp("srv-model") / "model")


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> FocusPipeline:
    return tiny_pipeline(tmp_path_factory.mktemp("srv-pipe"))


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_dir(tmp_path_factory.mktemp("srv-images"))


@pytest.fixture
def settings(images: Path) -> ServerSettings:
    return ServerSettings(allowed_roots=(images,), max_base64_bytes=200_000, max_pixels=4_000_000)


@pytest.fixture
def server(settings: ServerSettings, pipeline: FocusPipeline) -> MCPServer[ServerState]:
    return create_server(settings, pipeline_factory=lambda _: pipeline)
