"""`--sweep key=a,b`: the cartesian product, values read as -p reads them, a command's {key} filled."""

from __future__ import annotations

import pytest

from cli.errors import UsageError
from cli.sweeps import check_placeholders, combinations, fill_command, kind_params, name_sweep_value, parse_sweeps


def test_the_product_varies_the_first_sweep_slowest() -> None:
    combos = combinations(parse_sweeps(["lr=0.1,0.01,0.001", "hidden=16,32"]))
    assert [kind_params({"steps": 100}, c) for c in combos] == [
        {"steps": 100, "lr": lr, "hidden": h} for lr in (0.1, 0.01, 0.001) for h in (16, 32)]


def test_a_command_gets_its_values_where_it_names_them_as_written() -> None:
    argv = ["python", "-c", "print({1: 2})", "--lr={lr}", "{opt}"]
    combos = combinations(parse_sweeps(["lr=1e-3,0.10", "opt=adam"]))
    check_placeholders(argv, ["lr", "opt"])
    assert [fill_command(argv, c) for c in combos] == [
        ["python", "-c", "print({1: 2})", "--lr=1e-3", "adam"], ["python", "-c", "print({1: 2})", "--lr=0.10", "adam"]]
    with pytest.raises(UsageError, match=r"--sweep seed: the command has no \{seed\} to fill"):
        check_placeholders(argv, ["seed"])


@pytest.mark.parametrize(("texts", "fixed", "said"), [
    (["lr"], [], "--sweep 'lr': write it as key=value,value"),
    (["lr="], [], "--sweep 'lr=': an empty value"),
    (["lr=0.1,,0.2"], [], "--sweep 'lr=0.1,,0.2': an empty value"),
    (["lr=0.1", "lr=0.2"], [], "--sweep lr is given twice"),
    (["lr=0.1,0.2"], ["lr"], "--sweep lr: -p lr gives it too"),
])
def test_a_wrong_sweep_names_itself(texts: list[str], fixed: list[str], said: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_sweeps(texts, fixed=fixed)
    assert str(caught.value).startswith(said) and "\n" not in str(caught.value)


def test_a_refused_entry_is_traced_to_its_sweep_value() -> None:
    combos = combinations(parse_sweeps(["lr=0.1,x", "hidden=16"]))
    assert name_sweep_value("invalid_params: jobs[1].params.lr: not a number (got 'x')", combos) == "lr=x"
    assert name_sweep_value("invalid_params: jobs[1].params.steps: too big", combos) is None
