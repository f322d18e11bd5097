"""`--sweep key=a,b,c`: one job per combination of the swept values, submitted as one batch.

A kind's job gets each value as a parameter (read as `-p` reads it: `0.1` is a number); a
command job gets it where its argv says `{key}`, as written. The first --sweep varies slowest.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

from cli.errors import UsageError
from cli.params import _value

EXAMPLE = "e.g. --sweep lr=0.1,0.01"


def parse_sweeps(texts: Sequence[str], *, fixed: Sequence[str] = ()) -> dict[str, list[str]]:
    """Each --sweep's key and its values, as written; `fixed` are the keys -p already gives."""
    sweeps: dict[str, list[str]] = {}
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--sweep {text!r}: write it as key=value,value ({EXAMPLE})")
        values = raw.split(",")
        if not raw or any(not v.strip() for v in values):
            raise UsageError(f"--sweep {text!r}: an empty value; give values between the commas ({EXAMPLE})")
        if key in sweeps:
            raise UsageError(f"--sweep {key} is given twice: put all its values in one --sweep {key}=...")
        if key in fixed:
            raise UsageError(f"--sweep {key}: -p {key} gives it too; give it once")
        sweeps[key] = [v.strip() for v in values]
    return sweeps


def combinations(sweeps: dict[str, list[str]]) -> list[dict[str, str]]:
    """The cartesian product of the swept values, the first sweep varying slowest."""
    return [dict(zip(sweeps, values, strict=True)) for values in itertools.product(*sweeps.values())]


def kind_params(base: dict[str, Any], combo: dict[str, str]) -> dict[str, Any]:
    """A kind job's params for one combination: the -p params with the swept values read as -p reads them."""
    return {**base, **{key: _value(raw) for key, raw in combo.items()}}


def check_placeholders(argv: Sequence[str], keys: Sequence[str]) -> None:
    """Refuse a swept key the command never names: every job would run the same command."""
    for key in keys:
        if not any(f"{{{key}}}" in arg for arg in argv):
            raise UsageError(f"--sweep {key}: the command has no {{{key}}} to fill: write it where the value "
                             f"goes, e.g. -- python train.py --{key} {{{key}}}")


def fill_command(argv: Sequence[str], combo: dict[str, str]) -> list[str]:
    """The command with each swept `{key}` replaced by its value; other braces stay as written."""
    if not combo:
        return list(argv)
    pattern = re.compile(r"\{(" + "|".join(re.escape(k) for k in combo) + r")\}")
    return [pattern.sub(lambda m: combo[m.group(1)], arg) for arg in argv]


def name_sweep_value(message: str, combos: Sequence[dict[str, str]]) -> str | None:
    """The --sweep value a batch's refusal (`jobs[3].params.lr: ...`) comes from, as the option reads."""
    found = re.search(r"jobs\[(\d+)\]\.params\.(\w+)", message)
    if not found or int(found.group(1)) >= len(combos):
        return None
    combo = combos[int(found.group(1))]
    key = found.group(2)
    return f"{key}={combo[key]}" if key in combo else None
