"""One-line messages for tool arguments that fail their schema (shared by the LangChain tool and the MCP server).

Both surfaces validate an agent's arguments with pydantic, whose error text is a multi-line dump that echoes the
value in full (a 100 kB string, a newline and a forged ``SYSTEM:`` line included). :func:`argument_error` turns the
first failure into one line naming the argument, what it must be and what came, quoted and truncated by
:func:`focus_tool.errors.quote_text`: ``max_crops must be an integer between 1 and 8, got 'x'``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import annotated_types
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from focus_tool.errors import quote_text

_KINDS: dict[Any, str] = {int: "an integer", str: "a string", float: "a number", bool: "true or false"}


def expectation(info: FieldInfo) -> str:
    """What a field accepts, in words: ``an integer between 1 and 8``, ``a string of at most 2000 characters``."""
    kind = _KINDS.get(info.annotation, "a value of the documented type")
    lo = hi = longest = None
    for rule in info.metadata:
        if isinstance(rule, annotated_types.Ge):
            lo = rule.ge
        elif isinstance(rule, annotated_types.Le):
            hi = rule.le
        elif isinstance(rule, annotated_types.MaxLen):
            longest = rule.max_length
    if lo is not None and hi is not None:
        return f"{kind} between {lo} and {hi}"
    if lo is not None:
        return f"{kind} of at least {lo}"
    if hi is not None:
        return f"{kind} of at most {hi}"
    if longest is not None:
        return f"{kind} of at most {longest} characters"
    return kind


def shown(value: object, limit: int = 80) -> str:
    """A caller's value for a message: a string quoted, anything else as JSON; one line, at most ``limit`` chars."""
    if isinstance(value, str):
        return quote_text(value, limit)
    try:
        text = json.dumps(value, default=repr, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(type(value).__name__)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def argument_error(error: ValidationError, fields: Mapping[str, FieldInfo], *, tool: str = "the tool") -> str:
    """One line for the first failure in ``error`` (the rest only named), from the fields' declared types."""
    problems = error.errors(include_url=False)
    if not problems:
        return f"the arguments of {tool} are invalid; see its input schema"
    names = [str(p["loc"][0]) if p.get("loc") else "" for p in problems]
    first, name = problems[0], names[0]
    info = fields.get(name)
    accepted = ", ".join(fields)
    if not name:
        line = f"the arguments of {tool} must be a JSON object with: {accepted}; got {shown(first.get('input'))}"
    elif first["type"] == "extra_forbidden" or info is None:
        line = f"unknown argument {quote_text(name, 40)} for {tool}; its arguments are: {accepted}"
    elif first["type"] == "missing":
        line = f"{name} is required: {expectation(info)}"
    else:
        line = f"{name} must be {expectation(info)}, got {shown(first.get('input'))}"
    others = sorted({n if n in fields else quote_text(n, 40) for n in names[1:] if n and n != name})
    if others:
        line += f" (also invalid: {', '.join(others)})"
    return line
