"""``python -m mcp_server`` / ``focus-mcp`` / ``focus serve``: flags -> ServerSettings -> stdio or streamable HTTP.

Logs go to stderr: on stdio, stdout is the protocol wire.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

from focus_tool.devices import resolve_device
from focus_tool.errors import FocusError
from focus_tool.plugins import load_plugins
from mcp_server.settings import ServerSettings, add_server_arguments, settings_from_args

logger = logging.getLogger("mcp_server")


def run(settings: ServerSettings) -> None:
    """Check the device, configure stderr logging, build the server and serve until the transport closes.

    Raises:
        FocusError: the device is not one PyTorch sees here (before anything is served).
    """
    settings = replace(settings, device=resolve_device(settings.device))  # refused at start, not on every call
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger().setLevel(settings.log_level)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from mcp_server.server import create_server, transport_security

    server = create_server(settings)
    roots = ", ".join(str(r) for r in settings.policy().allowed_roots) or "(none: base64 only)"
    if settings.transport == "stdio":
        logger.info("focus-mcp on stdio; allowed roots: %s", roots)
        server.run("stdio")
        return
    hosts, _ = settings.http_allow_lists()
    shown = f"[{settings.bind_host}]" if ":" in settings.bind_host else settings.bind_host
    logger.info("focus-mcp on http://%s:%d%s; allowed roots: %s", shown, settings.port, settings.path, roots)
    logger.info("HTTP Host / Origin headers accepted: %s (others get 421 / 403)", ", ".join(hosts))
    server.run(
        "streamable-http",
        host=settings.bind_host,
        port=settings.port,
        streamable_http_path=settings.path,
        max_request_body_size=settings.max_request_body_size,
        transport_security=transport_security(settings),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 with one stderr line for a bad setting)."""
    parser = argparse.ArgumentParser(prog="focus-mcp", description="MCP server for focus-tool (FOCUS visual zoom).")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    try:
        load_plugins()  # a plugin's backbones load with --model
        run(settings_from_args(args))
    except FocusError as e:
        sys.stderr.write(f"focus-mcp: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
