"""Every command of the README's quick start (its CLI, curl and Celery blocks) and the hint
that `gpulab up` prints run as printed, against a real `gpulab up`, as a new member would.

The only rewrite is the port: the README's 8000 becomes a free one. The commands run in bash
with a fresh HOME (so `~/.config/gpulab/token` is the one `gpulab up` saved) and the
installed `gpulab` and `celery` first on the PATH.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import next_redis_url
from tests.support.stack import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start_blocks() -> list[str]:
    """The ```sh blocks between `## Quick start` and the next top-level section."""
    text = README.read_text()
    start = text.index("## Quick start")
    section = text[start:text.index("\n## ", start + 1)]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


def commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined (comments are left to bash)."""
    return [c for c in block.replace("\\\n", " ").splitlines() if c.strip()]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path, str]]:
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULAB_")}
    env.update(HOME=str(home), PATH=f"{bin_dir}:{env['PATH']}", GPULAB_REDIS_URL=next_redis_url(),
               GPULAB_API_URL=f"http://127.0.0.1:{port}", PYTHONUNBUFFERED="1", GPULAB_TORCH_THREADS="1")
    log = home / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--port", str(port)], env=env, cwd=home,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "gpulab is up" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        assert "gpulab is up" in log.read_text(), log.read_text()
        yield env, home, log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def run(line: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    port = env["GPULAB_API_URL"].rsplit(":", 1)[1]
    line = line.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    return subprocess.run(["bash", "-c", f"set -euo pipefail\n{line}"], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def assert_ran(result: subprocess.CompletedProcess[str], line: str) -> None:
    assert result.returncode == 0, f"{line!r} exited {result.returncode}:\n{result.stderr[-3000:]}"
    # curl exits 0 on an HTTP error: a problem body in its output is a failure too.
    for text in result.stdout.splitlines():
        if text.startswith("{") and '"code"' in text:
            body = json.loads(text)
            assert body.get("status", 200) < 400, f"{line!r} answered a problem: {text}"


@pytest.mark.timeout(900)
def test_quick_start_commands_run_as_printed(up: tuple[dict[str, str], Path, str]) -> None:
    env, home, _ = up
    blocks = quick_start_blocks()
    assert blocks[0].startswith("./dev up"), "the first block starts gpulab (done by the fixture)"
    lines = [c for block in blocks[1:] for c in commands(block)]
    assert any("curl" in c for c in lines) and any("celery -A worker.app" in c for c in lines)
    # The curl block's lines share a shell (TOKEN=...); the others run one line at a time.
    for block in blocks[1:]:
        if block.startswith("TOKEN="):
            script = "\n".join(commands(block))
            assert_ran(run(script, env, home), script)
            continue
        for line in commands(block):
            assert_ran(run(line, env, home), line)
    # What the lines claim: the files they fetched and the runs they made are there.
    assert (home / "fit.png").stat().st_size > 0
    assert json.loads((home / "gpulab-run" / "regression-1" / "run.json").read_text())["params"]["steps"] == 400
    assert (home / "gpulab-run" / "finetune-1" / "result.json").is_file()
    assert (home / "gpulab-run" / "finetune-2" / "result.json").is_file()


def test_up_prints_a_hint_that_runs(up: tuple[dict[str, str], Path, str]) -> None:
    # After the quick start: its job numbers (1, 2, 3) are the README's.
    env, home, output = up
    hint = re.search(r"try: (gpulab .+)", output)
    assert hint, output
    assert_ran(run(hint[1], env, home), hint[1])
