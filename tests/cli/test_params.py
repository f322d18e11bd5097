"""`-p key=value` read against a kind's schema: lists for list params, a repeated scalar refused."""

from __future__ import annotations

import pytest

from cli.errors import UsageError
from cli.params import build_params
from jobs.registry import get_kind

SCHEMA = {"properties": {
    "sizes": {"type": "array", "items": {"type": "integer"}},
    "args": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
    "steps": {"type": "integer"},
}}


@pytest.mark.parametrize(("pairs", "expected"), [
    (["sizes=64", "sizes=128"], {"sizes": [64, 128]}),
    (["sizes=64,128"], {"sizes": [64, 128]}),
    (["sizes=[64, 128]", "sizes=256"], {"sizes": [64, 128, 256]}),
    (["args=a", "args=1"], {"args": ["a", "1"]}),  # a list of strings keeps "1" a string
    (["args=a,b"], {"args": ["a", "b"]}),
    (["args=[\"a,b\"]"], {"args": ["a,b"]}),  # JSON keeps a comma inside an item
    (["steps=3", "name=x=y"], {"steps": 3, "name": "x=y"}),
])
def test_values_and_lists(pairs: list[str], expected: dict) -> None:
    assert build_params(pairs, SCHEMA) == expected


def test_a_repeated_scalar_is_an_error_naming_both_values() -> None:
    with pytest.raises(UsageError, match=r"-p steps is given twice \(3 and 4\)"):
        build_params(["steps=3", "steps=4"], SCHEMA)


@pytest.mark.parametrize("text", ["steps", "=3"])
def test_a_pair_without_key_or_equals_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="key=value"):
        build_params([text], SCHEMA)


def test_a_real_kinds_list_param_validates() -> None:
    kind = get_kind("device-compare")
    params = build_params(["sizes=64,128", "repeats=2"], kind.params.model_json_schema())
    assert kind.validate(params).model_dump()["sizes"] == [64, 128]
