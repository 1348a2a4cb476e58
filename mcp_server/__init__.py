"""focus-tool's MCP server: a thin shell over :class:`focus_tool.agent.FocusService` (``create_server``)."""
