"""Load on the real server: streamable HTTP on loopback, the shipped embedded model, 8 clients x 20 focus_zoom calls.

Acceptance of issue #6: 0 failed calls, every answer identical to the sequential answer for the same input, server
RSS flat over the load (growth below 15 % of the RSS before it). The load itself is ``benchmarks/load_http.py``
(``run_load``); with ``FOCUS_WRITE_LOAD_REPORT=1`` the measured figures go to
``benchmarks/results/load_http/test_report.json`` (+ ``.md``). About 40-60 s on two busy CPU cores.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from benchmarks.load_http import RESULTS, LoadSpec, run_load, write_report

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def test_eight_clients_twenty_calls_each_on_the_embedded_model(tmp_path: Path) -> None:
    spec = LoadSpec(clients=8, calls_per_client=20, rss_growth_limit=0.15)
    report = asyncio.run(run_load(spec, tmp_path))
    if os.environ.get("FOCUS_WRITE_LOAD_REPORT") == "1":
        write_report(
            report,
            RESULTS,
            command="FOCUS_WRITE_LOAD_REPORT=1 pytest tests/server/test_load_http.py",
            stem="test_report",
        )
    log = (tmp_path / "server.log").read_text()[-2000:]
    load = report["concurrent"]
    assert report["failures"] == [], log
    assert load["calls"] == 160 and load["failed"] == 0 and report["sequential"]["failed"] == 0
    assert load["mismatched_answers"] == 0 and report["concurrent_warmup"]["mismatched_answers"] == 0
    assert load["model_runs"] == 160  # --no-result-reuse: every call ran the model, none came from the cache
    memory = report["memory_mib"]
    assert report["checks"]["memory_flat"], memory  # growth over the load < 15 % of the RSS before it
    assert all(report["checks"].values()), report["checks"]
