"""The contract every registered job kind keeps (built-in, plug-in, and any kind added later):

- its params refuse an unknown field and every value outside a bound its schema declares,
  naming the field;
- cancelled before it starts, it returns at once with `stopped_early`, having taken no
  training step (or it is one short computation with nothing to stop, and says so below);
- on a GPU it runs with its defaults and reports the job's device.

A new kind gets these tests by being registered; a kind-specific test keeps only what is the
kind's own (its numbers against a reference, its cross-field rules).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from jobs.base import JobError, JobKind
from jobs.context import LocalContext
from jobs.registry import list_kinds
from tests.jobs.conftest import one_thread

KINDS = {k.name: k for k in list_kinds()}
# What a kind needs beyond its defaults (a kind with a from_job param gets job 1, a finished
# one-epoch classify-digits job, or job 2, a few steps of char-rnn, from `trained_root`).
REQUIRED: dict[str, dict[str, Any]] = {"command": {"argv": ["true"]}, "char-rnn-sample": {"from_job": 2}}
# Kinds that never poll should_stop(), each with why that is right.
NOTHING_TO_STOP = {
    "tensor-anatomy": "a few tensor inspections, milliseconds",
    "autograd": "a handful of gradients, milliseconds",
    "activations": "one pass over a grid of points, milliseconds",
}
# The service tests' own kinds (tests/plugin_kinds, `test-*`) are fixtures that each do one
# small thing: polling is not asked of them, but one that polls must stop like any kind.
TEST_KIND_PREFIX = "test-"
# Kinds that cannot run in-process at all, with why.
WORKER_ONLY = {
    "command": "a member's command runs only under a worker (it raises JobError here)",
    "test-fail": "fails by design (a test kind)",
}


def minimal(kind: JobKind) -> dict[str, Any]:
    params = dict(REQUIRED.get(kind.name, {}))
    if kind.from_job_param:
        params.setdefault(kind.from_job_param, 1)
    return params


def _options(prop: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema's alternatives for a field (Optional gives anyOf), references resolved."""
    options = [prop, *[o for o in prop.get("anyOf", []) if isinstance(o, dict)]]
    return [defs.get(o["$ref"].rsplit("/", 1)[-1], o) if "$ref" in o else o for o in options]


def _below(bound: float, integer: bool) -> float:
    return bound - 1 if integer else bound - max(1.0, abs(bound))


def _above(bound: float, integer: bool) -> float:
    return bound + 1 if integer else bound + max(1.0, abs(bound))


def out_of_bounds(kind: JobKind) -> list[tuple[str, str, Any]]:
    """(field, which bound, a value just past it) for every bound the kind's schema declares."""
    cases: list[tuple[str, str, Any]] = []
    schema = kind.params.model_json_schema()
    for name, prop in schema.get("properties", {}).items():
        for o in _options(prop, schema.get("$defs", {})):
            integer = o.get("type") == "integer"
            if "enum" in o or "const" in o:
                cases.append((name, "enum", "not-a-choice"))
            if "minimum" in o:
                cases.append((name, "minimum", _below(o["minimum"], integer)))
            if "exclusiveMinimum" in o:
                cases.append((name, "exclusiveMinimum", o["exclusiveMinimum"]))
            if "maximum" in o:
                cases.append((name, "maximum", _above(o["maximum"], integer)))
            if "exclusiveMaximum" in o:
                cases.append((name, "exclusiveMaximum", o["exclusiveMaximum"]))
            if o.get("type") == "string" and "maxLength" in o:
                cases.append((name, "maxLength", "x" * (o["maxLength"] + 1)))
            if o.get("type") == "array":
                if o.get("minItems", 0) >= 1:
                    cases.append((name, "minItems", []))
                items = _options(o.get("items") or {}, schema.get("$defs", {}))[0]
                if "enum" in items:
                    cases.append((name, "items.enum", ["not-a-choice"]))
                if "minimum" in items:
                    cases.append((name, "items.minimum", [_below(items["minimum"], items.get("type") == "integer")]))
                if "maximum" in items:
                    cases.append((name, "items.maximum", [_above(items["maximum"], items.get("type") == "integer")]))
    return cases


BOUNDS = [pytest.param(k, field, value, id=f"{k.name}-{field}-{which}")
          for k in KINDS.values() for field, which, value in out_of_bounds(k)]


@pytest.mark.parametrize("kind", KINDS.values(), ids=list(KINDS))
def test_params_refuse_an_unknown_field(kind: JobKind) -> None:
    assert kind.params.model_config.get("extra") == "forbid"
    kind.validate(minimal(kind))  # the defaults (and what it needs) are valid
    with pytest.raises(ValidationError) as exc:
        kind.validate({**minimal(kind), "no_such_param": 1})
    assert [e["loc"] for e in exc.value.errors()] == [("no_such_param",)]


@pytest.mark.parametrize(("kind", "field", "value"), BOUNDS)
def test_params_refuse_a_value_past_a_declared_bound(kind: JobKind, field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        kind.validate({**minimal(kind), field: value})
    assert any(e["loc"] and e["loc"][0] == field for e in exc.value.errors()), exc.value.errors()


def test_the_bounds_cases_cover_the_built_in_kinds() -> None:
    # A contract over no bounds would pass for nothing: the built-in training kinds declare some.
    kinds_with_bounds = {p.values[0].name for p in BOUNDS}
    assert {"regression", "classify-digits", "gan", "dcgan", "finetune", "device-compare"} <= kinds_with_bounds


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts folder where job 1 is a finished one-epoch classify-digits job, job 2 a
    few steps of char-rnn."""
    digits, char_rnn = KINDS["classify-digits"], KINDS["char-rnn"]
    root = tmp_path_factory.mktemp("contract_jobs")
    with one_thread():  # set up before the autouse one-thread fixture
        digits.run(digits.validate({"epochs": 1}), LocalContext(artifacts_root=root, job_id=1, seed=0))
        char_rnn.run(char_rnn.validate({"steps": 2, "hidden": 16, "sample_length": 5}),
                     LocalContext(artifacts_root=root, job_id=2, seed=0))
    return root


class CountingContext(LocalContext):
    """A context cancelled before the job began, counting how often the job asked."""

    polls = 0

    def should_stop(self) -> bool:
        self.polls += 1
        return True


def _ctx(kind: JobKind, root: Path, request: pytest.FixtureRequest, device: str = "cpu", *,
         stopped: bool = False) -> LocalContext:
    # A from_job kind runs beside the finished classify-digits job 1 (trained only if needed).
    base = request.getfixturevalue("trained_root") if kind.from_job_param else root
    cls = CountingContext if stopped else LocalContext
    return cls(artifacts_root=base, job_id=f"contract-{kind.name}-{device.replace(':', '')}-{root.name}",
               device=device, seed=0)


RUNNABLE = [k for k in KINDS.values() if k.name not in WORKER_ONLY]


@pytest.mark.parametrize("kind", RUNNABLE, ids=[k.name for k in RUNNABLE])
def test_a_job_cancelled_before_it_starts_returns_at_once(kind: JobKind, tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    ctx = _ctx(kind, tmp_path, request, stopped=True)
    assert isinstance(ctx, CountingContext)
    result = kind.run(kind.validate(minimal(kind)), ctx)
    assert isinstance(result, dict)
    if kind.name in NOTHING_TO_STOP:
        assert ctx.polls == 0, f"{kind.name} polls should_stop(): take it off NOTHING_TO_STOP"
        return
    if kind.name.startswith(TEST_KIND_PREFIX) and ctx.polls == 0:
        return
    assert ctx.polls >= 1, f"{kind.name} never polls ctx.should_stop(): a cancel would wait for its end"
    assert result.get("stopped_early") is True
    # It may evaluate where it starts (step 0), but it takes no training step.
    assert all(not step for _, _, step in ctx.recorded.metrics), ctx.recorded.metrics
    assert all(step == 0 for step, _ in ctx.recorded.progress)


@pytest.mark.parametrize("name", sorted(WORKER_ONLY))
def test_worker_only_kinds_refuse_to_run_in_process(name: str, tmp_path: Path) -> None:
    kind = KINDS[name]
    with pytest.raises(JobError):
        kind.run(kind.validate(minimal(kind)), LocalContext(artifacts_root=tmp_path, job_id=1))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", RUNNABLE, ids=[k.name for k in RUNNABLE])
def test_runs_on_a_gpu_with_its_defaults(kind: JobKind, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    result = kind.run(kind.validate(minimal(kind)), _ctx(kind, tmp_path, request, "cuda:0"))
    assert isinstance(result, dict)
    if "device" in result:
        assert result["device"] == "cuda:0"
