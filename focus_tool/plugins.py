"""Third-party extensions: installed packages that register backbones, presets, methods or benchmarks.

A package declares an entry point in the ``focus_tool.plugins`` group whose object is a function of no arguments
that calls the registration functions (:func:`focus_tool.adapters.registry.register_backbone`,
:func:`focus_tool.presets.register_preset`, :func:`focus_tool.methods.register_method`,
:func:`focus_tool.eval.benchmarks.register_benchmark`)::

    [project.entry-points."focus_tool.plugins"]
    my_backbone = "my_package.focus_plugin:register"

The ``focus`` command and the MCP server call :func:`load_plugins` once at start (docs/extending.md).
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

from focus_tool.errors import FocusError

logger = logging.getLogger(__name__)
GROUP = "focus_tool.plugins"
_LOADED: set[str] = set()


def load_plugins(eps: list[EntryPoint] | None = None) -> list[str]:
    """Call every ``focus_tool.plugins`` entry point not called yet (``eps``: these instead of the installed ones).

    Returns:
        The names of the entry points called by this call.

    Raises:
        FocusError: an entry point cannot be imported or its function fails (the plugin is named).
    """
    called = []
    for ep in eps if eps is not None else list(entry_points(group=GROUP)):
        key = f"{ep.name}={ep.value}"
        if key in _LOADED:
            continue
        try:
            ep.load()()
        except Exception as e:  # a plugin's own failure, reported with its name instead of a traceback
            raise FocusError(f"focus-tool plugin {ep.name!r} ({ep.value}) failed to load: {e}") from e
        _LOADED.add(key)
        called.append(ep.name)
        logger.info("loaded focus-tool plugin %s (%s)", ep.name, ep.value)
    return called
