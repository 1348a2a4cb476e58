"""The method registry: every engine the harness, the CLI and the result type know, in one table.

A method is FOCUS or a baseline behind the harness's ``run`` signature (:class:`focus_tool.baselines.common.Method`).
The evaluation runner builds methods from here, ``focus eval --method`` takes its choices from here, and
:attr:`focus_tool.result.FocusResult.method` accepts exactly the registered names. A new method is one
:func:`register_method` call (docs/extending.md); a built-in's factory is imported only when it is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Union

from focus_tool.errors import FocusError

if TYPE_CHECKING:
    from focus_tool.adapters.base import MLLMAdapter
    from focus_tool.baselines.common import Method


@dataclass(frozen=True)
class MethodOptions:
    """The method settings a harness run passes to every factory (each factory reads the ones it needs).

    Attributes:
        pipeline: FOCUS as the checkpoint's preset has it, the paper's pipeline or lean FOCUS
            (:data:`focus_tool.config.PIPELINES`).
        zoomeye_depth: ZoomEye's tree depth limit (None: its preset's).
        vicrop_variant: ViCrop's map, "rel-att" or "grad-att".
        vicrop_high: ViCrop's high-resolution variant.
    """

    pipeline: str = "preset"
    zoomeye_depth: int | None = None
    vicrop_variant: str = "rel-att"
    vicrop_high: bool = False


MethodFactory = Callable[["MLLMAdapter", MethodOptions], "Method"]


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Attributes:
        name: the name on the command line, in reports and in ``FocusResult.method``.
        factory: ``(adapter, options) -> Method``, or ``"module:function"`` naming one (imported when built).
        summary: one line for ``--help`` and docs.
        attention: the attention kernel the method needs by default ("eager" where it reads attention weights).
    """

    name: str
    factory: Union[MethodFactory, str]  # noqa: UP007 (a forward-referenced callable in a union)
    summary: str
    attention: Literal["sdpa", "eager"] = "sdpa"

    def build(self, adapter: MLLMAdapter, options: MethodOptions) -> Method:
        """The method over ``adapter``."""
        factory = self.factory
        if isinstance(factory, str):
            module_name, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module_name), attr)
        return factory(adapter, options)


_REGISTRY: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("focus", "focus_tool.eval.methods:build_focus", "FOCUS: KV-cache relevance map, ranked crops"),
        MethodSpec("zoomeye", "focus_tool.eval.methods:build_zoomeye", "ZoomEye: tree search over zoomed views"),
        MethodSpec("vicrop", "focus_tool.eval.methods:build_vicrop", "ViCrop: attention-map crop", attention="eager"),
        MethodSpec("vanilla", "focus_tool.eval.methods:build_vanilla", "vanilla: the answer on the whole image"),
    )
}


def register_method(spec: MethodSpec, *, replace: bool = False) -> None:
    """Add ``spec`` to the registry (``replace``: allow overwriting a registered name).

    Raises:
        FocusError: the name is taken (and ``replace`` is False) or is not a plain identifier.
    """
    if not spec.name.replace("-", "_").isidentifier():
        raise FocusError(f"method name {spec.name!r} must be letters, digits, '_' or '-'")
    if spec.name in _REGISTRY and not replace:
        raise FocusError(f"method {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def unregister_method(name: str) -> None:
    """Remove a registered method (tests; a no-op for unknown names)."""
    _REGISTRY.pop(name, None)


def method_names() -> tuple[str, ...]:
    """The registered method names, built-ins first, in registration order."""
    return tuple(_REGISTRY)


def method_spec(name: str) -> MethodSpec:
    """The registered method called ``name``.

    Raises:
        FocusError: no method has that name.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise FocusError(f"unknown method {name!r}; choose one of: {', '.join(_REGISTRY)}") from None


def build_method(name: str, adapter: MLLMAdapter, options: MethodOptions | None = None) -> Method:
    """The method called ``name`` over ``adapter``.

    Raises:
        FocusError: no method has that name (or its factory rejects ``options``).
    """
    return method_spec(name).build(adapter, options or MethodOptions())
