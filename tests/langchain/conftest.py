"""Fixtures of the LangChain tool tests: one tiny pipeline per session, a fresh service per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from focus_tool.agent import AgentPolicy, FocusService
from focus_tool.langchain import FocusZoomTool
from focus_tool.pipeline import FocusPipeline
from tests.agent_support import image_dir, tiny_pipeline


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> FocusPipeline:
    return tiny_pipeline(tmp_path_factory.mktemp("lc-model"))


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_dir(tmp_path_factory.mktemp("lc-images"))


@pytest.fixture
def zoom_tool(pipeline: FocusPipeline, images: Path) -> FocusZoomTool:
    return FocusZoomTool(service=FocusService(pipeline, AgentPolicy(allowed_roots=(images,))))
