"""The API against its own OpenAPI, by schemathesis, on a real running stack (both databases):
0 server errors, 0 undocumented status codes or content types, stateful phase included.

Bounded for CI: a fixed seed, a few examples per operation and a time budget.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import own_stack
from tests.support.stack import Stack

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance"
MAX_EXAMPLES = os.environ.get("GPULAB_SCHEMATHESIS_EXAMPLES", "3")
MAX_TIME_S = os.environ.get("GPULAB_SCHEMATHESIS_MAX_TIME_S", "20")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzzed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the fuzzer drains devices and adds users, which other tests must not see."""
    with own_stack(request.param, tmp_path_factory.mktemp(f"schemathesis-{request.param}")) as stack:
        yield stack


@pytest.mark.timeout(170)
def test_the_api_keeps_its_openapi_promises(fuzzed: Stack, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{fuzzed.url}/openapi.json",
         "--checks", CHECKS, "--phases", "examples,coverage,fuzzing,stateful",
         "--max-examples", MAX_EXAMPLES, "--max-time", MAX_TIME_S, "--seed", "20261130",
         "--workers", "2", "--request-timeout", "20", "--generation-database", "none",
         "--header", f"Authorization: Bearer {fuzzed.token}", "--no-color", "--warnings", "off",
         "--suppress-health-check", "all"],
        capture_output=True, text=True, timeout=160, cwd=tmp_path,
    )
    assert run.returncode == 0, f"{run.stdout[-12000:]}\n{run.stderr[-3000:]}"
    generated = re.search(r"(\d+) generated", run.stdout)
    assert generated and int(generated[1]) > 100, run.stdout[-3000:]  # it really ran
    assert "Stateful" in run.stdout
    print(f"schemathesis: {generated[1]} test cases, 0 failures")
