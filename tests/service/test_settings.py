"""Settings refuse contradictions at start, naming both values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_visibility_timeout_must_outlast_the_longest_job(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(state_dir=tmp_path, max_timeout_s=7200, visibility_timeout_s=3600)
    text = str(err.value)
    assert "GPULAB_VISIBILITY_TIMEOUT_S=3600" in text and "GPULAB_MAX_TIMEOUT_S=7200" in text


def test_worker_timeout_must_span_two_heartbeats(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="GPULAB_WORKER_TIMEOUT_S=5"):
        Settings(state_dir=tmp_path, heartbeat_s=5, worker_timeout_s=5)


def test_defaults_put_state_under_the_state_dir(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path / 'gpulab.sqlite3'}"
    assert s.artifacts_dir == tmp_path / "artifacts"


def test_cli_refuses_contradictory_settings_with_a_message(tmp_path: Path) -> None:
    env = {"GPULAB_STATE_DIR": str(tmp_path), "GPULAB_MAX_TIMEOUT_S": "100", "GPULAB_VISIBILITY_TIMEOUT_S": "50",
           "GPULAB_DEFAULT_TIMEOUT_S": "60",
           "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "cli.main", "migrate"], env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert "GPULAB_VISIBILITY_TIMEOUT_S=50" in r.stderr


@pytest.mark.parametrize(("url", "shown"), [
    # `gpulab up`'s own Redis: a password and no user name.
    ("redis://:s3cret-pw@127.0.0.1:6380/0", "redis://:***@127.0.0.1:6380/0"),
    ("postgresql+psycopg://gpulab:s3cret-pw@db:5432/gpulab", "postgresql+psycopg://gpulab:***@db:5432/gpulab"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_a_url_s_password_is_masked_wherever_it_is_shown(url: str, shown: str) -> None:
    import redis

    from cli.errors import one_line
    from service.api.redact import redact
    from service.settings import safe_url

    assert safe_url(url) == shown
    assert redact(f"cannot connect to {url}: refused") == f"cannot connect to {shown}: refused"
    # The line a person reads when the broker does not answer.
    line, _ = one_line(redis.ConnectionError("refused"), redis_url=url)
    assert shown in line and "s3cret" not in line
