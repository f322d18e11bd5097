"""`gpulab` commands run in the test's own process: cli.main's main() with the command line,
environment and output streams a process would have, against a stack's real API.

A `gpulab` process costs a Python start (~1 CPU-s) and the suite ran some 50 of them; the
entry point itself keeps tests of its own as processes (tests/cli/test_errors_and_run.py,
tests/faults/test_migrate.py, Stack.start_up).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def _as_process(args: tuple[str, ...], env: dict[str, str]) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """This process's environment, command line and output streams as a `gpulab` process's."""
    from cli.console import err, out
    from service.settings import get_settings

    saved_env, saved_argv, widths = dict(os.environ), sys.argv, (out.width, err.width)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["gpulab", *args]
    # rich reads COLUMNS when a console is made (at import); off a terminal cli.console widens
    # stdout's console from rich's 80 to 160.
    columns = env.get("COLUMNS", "")
    out.width = int(columns) if columns.isdigit() else 160
    err.width = int(columns) if columns.isdigit() else 80
    get_settings.cache_clear()
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            yield stdout, stderr
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        out.width, err.width = widths
        get_settings.cache_clear()


def run_in_process(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `gpulab ARGS` to completion here; the result reads as subprocess.run's would."""
    from cli.main import main

    code: int | str | None = 0
    with _as_process(args, env) as (stdout, stderr):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
    if not isinstance(code, int):  # sys.exit("message") prints it and exits 1, as Python does
        if code is not None:
            stderr.write(f"{code}\n")
        code = 0 if code is None else 1
    return subprocess.CompletedProcess(["gpulab", *args], code, stdout.getvalue(), stderr.getvalue())
