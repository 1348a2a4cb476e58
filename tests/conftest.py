"""Shared test setup: never reach the network for model files.

The connect() guard itself is pytest-socket's (``addopts`` in pyproject.toml); ``HF_HUB_OFFLINE=1`` also holds in
the CLI subprocesses, which inherit the environment.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
