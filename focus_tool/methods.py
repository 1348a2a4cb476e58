"""The method registry: every engine the harness, the CLI and the result type know, in one table.

A method is FOCUS or a baseline behind the harness's ``run`` signature (:class:`focus_tool.baselines.common.Method`).
The evaluation runner builds methods from here, ``focus eval --method`` takes its choices from here, and
:attr:`focus_tool.result.FocusResult.method` accepts exactly the registered names. A new method is one
:func:`register_method` call (docs/extending.md); a built-in's factory is imported only when it is built.

Each method may declare its own options: a frozen dataclass of typed fields with defaults (``MethodSpec.options``).
``focus eval --method NAME --method-option KEY=VALUE`` sets them (:func:`parse_method_options` converts the text by
the field's type), the factory receives its own options object, and the run signature records the options that
differ from the defaults (:func:`changed_options`).
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union

from focus_tool.errors import FocusError

if TYPE_CHECKING:
    from focus_tool.adapters.base import MLLMAdapter
    from focus_tool.baselines.common import Method


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that declares none."""


MethodFactory = Callable[["MLLMAdapter", Any], "Method"]
OptionValue = Union[str, int, float, bool, None]  # noqa: UP007 (an alias evaluated at runtime)


def _resolve(ref: Any) -> Any:
    """``ref`` itself, or the object a ``"module:name"`` string names (imported now)."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Attributes:
        name: the name on the command line, in reports and in ``FocusResult.method``.
        factory: ``(adapter, options) -> Method``, or ``"module:function"`` naming one (imported when built); it
            receives an instance of ``options``.
        summary: one line for ``--help`` and docs.
        attention: the attention kernel the method needs by default ("eager" where it reads attention weights).
        options: the method's options, a frozen dataclass whose fields all have defaults and are ``str``, ``int``,
            ``float``, ``bool``, a ``Literal`` of strings, or one of these ``| None``; or ``"module:Class"`` naming
            one (imported when options are parsed or the method is built).
    """

    name: str
    factory: Union[MethodFactory, str]  # noqa: UP007 (a forward-referenced callable in a union)
    summary: str
    attention: Literal["sdpa", "eager"] = "sdpa"
    options: Union[type, str] = NoOptions  # noqa: UP007 (kept alike with factory)

    def options_type(self) -> type:
        """The options dataclass (imported when named by a string).

        Raises:
            FocusError: it is not a frozen dataclass whose fields all have defaults.
        """
        cls = _resolve(self.options)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise FocusError(f"method {self.name!r}: options must be a dataclass, got {cls!r}")
        params = getattr(cls, "__dataclass_params__", None)
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        if params is None or not params.frozen or missing:
            raise FocusError(f"method {self.name!r}: options {cls.__name__} must be frozen, every field with a default")
        return cls

    def default_options(self) -> Any:
        """The method's options with every field at its default."""
        return self.options_type()()

    def build(self, adapter: MLLMAdapter, options: Any = None) -> Method:
        """The method over ``adapter`` with ``options`` (None: the defaults).

        Raises:
            FocusError: ``options`` is not an instance of this method's options class.
        """
        cls = self.options_type()
        if options is None:
            options = cls()
        if not isinstance(options, cls):
            raise FocusError(f"method {self.name!r} takes {cls.__name__} options, got {type(options).__name__}")
        factory: MethodFactory = _resolve(self.factory)
        return factory(adapter, options)


_REGISTRY: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "focus",
            "focus_tool.eval.methods:build_focus",
            "FOCUS: KV-cache relevance map, ranked crops",
            options="focus_tool.eval.methods:FocusOptions",
        ),
        MethodSpec(
            "zoomeye",
            "focus_tool.eval.methods:build_zoomeye",
            "ZoomEye: tree search over zoomed views",
            options="focus_tool.eval.methods:ZoomEyeOptions",
        ),
        MethodSpec(
            "vicrop",
            "focus_tool.eval.methods:build_vicrop",
            "ViCrop: attention-map crop",
            attention="eager",
            options="focus_tool.eval.methods:ViCropOptions",
        ),
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


def build_method(name: str, adapter: MLLMAdapter, options: Any = None) -> Method:
    """The method called ``name`` over ``adapter`` with its ``options`` (None: the defaults).

    Raises:
        FocusError: no method has that name, or ``options`` is not its options class (or its factory rejects them).
    """
    return method_spec(name).build(adapter, options)


# ---------------------------------------------------------------------------------------------------- options


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Literal:
        return "|".join(str(a) for a in args)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _type_name(a) for a in args)
    return getattr(tp, "__name__", str(tp))


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _convert(text: str, tp: Any) -> OptionValue:
    """``text`` as a value of ``tp``; ValueError when it is not one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(text, arg)
            except ValueError:
                continue
        raise ValueError(text)
    if origin is Literal:
        if text not in [str(a) for a in args]:
            raise ValueError(text)
        return next(a for a in args if str(a) == text)
    if tp is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise ValueError(text)
        return text.lower() in _TRUE
    if tp in (int, float, str):
        return typing.cast(OptionValue, tp(text))
    raise FocusError(f"option type {_type_name(tp)} is not supported (str, int, float, bool, Literal, | None)")


def option_help(name: str) -> str:
    """The options of method ``name`` as one line, ``key (type, default value)`` each; "none" if it has none."""
    cls = method_spec(name).options_type()
    return (
        ", ".join(f"{key} ({_type_name(tp)}, default {getattr(cls(), key)!r})" for key, tp in _field_types(cls).items())
        or "none"
    )


def parse_method_options(name: str, pairs: Iterable[str]) -> Any:
    """Method ``name``'s options from ``KEY=VALUE`` texts (``--method-option``), converted by the fields' types.

    Raises:
        FocusError: a text is not ``KEY=VALUE``, names no option of the method, or its value does not convert (one
            line naming the valid keys and types).
    """
    spec = method_spec(name)
    cls = spec.options_type()
    fields = _field_types(cls)
    values: dict[str, OptionValue] = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in fields:
            raise FocusError(
                f"--method-option {pair!r}: method {name!r} takes KEY=VALUE, its options: {option_help(name)}"
            )
        try:
            values[key] = _convert(text.strip(), fields[key])
        except ValueError:
            raise FocusError(
                f"--method-option {pair!r}: {name}'s {key} takes {_type_name(fields[key])}, got {text!r}"
            ) from None
    return options_from(name, values)


def options_from(name: str, values: Mapping[str, OptionValue]) -> Any:
    """Method ``name``'s options with ``values`` set (the rest at their defaults); the options class validates them.

    Raises:
        FocusError: a key names no option of the method, or the options class rejects a value.
    """
    cls = method_spec(name).options_type()
    unknown = sorted(set(values) - set(_field_types(cls)))
    if unknown:
        raise FocusError(f"method {name!r} has no option {', '.join(unknown)}; its options: {option_help(name)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise FocusError(f"method {name!r} options: {e}") from e


def changed_options(options: Any) -> dict[str, OptionValue]:
    """The fields of an options object that differ from their defaults (what a run signature records)."""
    default = type(options)()
    return {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if getattr(options, f.name) != getattr(default, f.name)
    }


def option_labels(options: Any) -> list[str]:
    """The changed options as short labels (a default report name's parts).

    A text option is its value (``paper``), a flag its name (``high``; ``no-high`` when turned off), any other
    option name and value (``depth2``).
    """
    labels = []
    for key, value in changed_options(options).items():
        if isinstance(value, bool):
            labels.append(key if value else f"no-{key}")
        else:
            labels.append(value if isinstance(value, str) else f"{key}{value}")
    return labels
