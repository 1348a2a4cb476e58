"""focus-tool's MCP server: a thin shell over :class:`focus_tool.service.FocusService` (``create_server``)."""
