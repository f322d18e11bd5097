"""`--sweep key=a,b,c`: one job per combination of the swept values, submitted as one batch.

A kind's job gets each value as a parameter (read as `-p` reads it: `0.1` is a number); a
command job gets it where its argv says `{key}`, as written. The first --sweep varies slowest.
`gpulab cancel --batch N` cancels what a sweep left unfinished.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

from cli.client import Api, CliError
from cli.console import err, out
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


def sweeps_of(texts: list[str], *, fixed: list[str]) -> dict[str, list[str]]:
    """The --sweep options read (none: a single job)."""
    return parse_sweeps(texts, fixed=fixed) if texts else {}


def submit_sweep(api: Api, bodies: list[dict[str, Any]], combos: list[dict[str, str]]) -> None:
    """Submit a sweep as one batch; print its job ids on one line, and how to list them."""
    try:
        batch = api.post("/jobs/batch", json={"jobs": bodies})
    except CliError as exc:
        named = name_sweep_value(str(exc), combos)
        if named is None:
            raise
        raise UsageError(f"--sweep {named}: {exc}") from None
    out.print(" ".join(str(j["id"]) for j in batch["jobs"]))
    err.print(f"batch {batch['batch_id']}: {len(bodies)} jobs submitted; list them with "
              f"gpulab jobs --batch {batch['batch_id']}")


def cancel_batch(api: Api, batch: int) -> None:
    """Cancel each unfinished job of a batch, one request each: every cancel is checked as one."""
    ids: list[int] = []
    query: dict[str, Any] = {"batch": batch, "status": ["pending", "dispatched", "running"], "limit": 500}
    while True:
        page = api.get("/jobs", params=query)
        ids += [j["id"] for j in page["items"]]
        if page["next_cursor"] is None:
            break
        query["cursor"] = page["next_cursor"]
    done: dict[str, list[int]] = {"cancelled": [], "cancel requested": [], "already ended": []}
    for job_id in sorted(ids):
        try:
            job = api.post(f"/jobs/{job_id}/cancel")
        except CliError as exc:
            if not str(exc).startswith("job_finished:"):
                raise
            done["already ended"].append(job_id)  # it ended between the list and its cancel
            continue
        done["cancelled" if job["status"] == "cancelled" else "cancel requested"].append(job_id)
    said = "; ".join(f"{what} {' '.join(map(str, which))}" for what, which in done.items() if which)
    out.print(f"batch {batch}: {said or 'no unfinished job'}")
