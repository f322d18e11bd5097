"""`-p key=value` on the command line, read against the kind's parameter schema.

A list-typed parameter collects every value given for it: `-p args=a -p args=b` and
`-p args=a,b` both give `["a", "b"]` (a JSON list, `-p args='["a,b"]'`, keeps commas).
A scalar parameter given twice is an error rather than "the last one wins", which hides typos.
"""

from __future__ import annotations

import json
from typing import Any

from cli.errors import UsageError


def _value(raw: str) -> Any:
    """The value as JSON when it parses (numbers, true, lists), else the string itself."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def split_pair(text: str) -> tuple[str, str]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UsageError(f"-p {text!r}: write parameters as key=value (e.g. -p steps=200)")
    return key.strip(), raw


def list_schema(schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The array schema of `key` when the kind's JSON Schema types it as a list, else None."""
    prop = (schema or {}).get("properties", {}).get(key)
    if not isinstance(prop, dict):
        return None
    for option in (prop, *prop.get("anyOf", []), *prop.get("oneOf", [])):
        if isinstance(option, dict) and option.get("type") == "array":
            return option
    return None


def build_params(pairs: list[str], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The params dict from repeated `-p key=value`, lists built for list-typed keys."""
    params: dict[str, Any] = {}
    given: dict[str, str] = {}
    for text in pairs:
        key, raw = split_pair(text)
        array = list_schema(schema, key)
        if array is not None:
            value = _value(raw)
            if isinstance(value, list):
                items = value
            else:
                # Items of a list of strings stay strings ("1" is a file name, not a number).
                strings = (array.get("items") or {}).get("type") == "string"
                items = [v if strings else _value(v) for v in raw.split(",")] if raw else []
            params.setdefault(key, []).extend(items)
            continue
        if key in params:
            raise UsageError(f"-p {key} is given twice ({given[key]} and {raw}): {key} takes one value")
        params[key], given[key] = _value(raw), raw
    return params
