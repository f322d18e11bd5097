"""`gpulab migrate` on a fresh state dir creates the folder (it failed with "unable to open
database file")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect


def test_migrate_creates_a_missing_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "not" / "there" / "yet"
    env = {**os.environ, "GPULAB_STATE_DIR": str(state), "GPULAB_DATABASE_URL": ""}
    done = subprocess.run([sys.executable, "-m", "cli.main", "migrate"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    database = state / "gpulab.sqlite3"
    engine = create_engine(f"sqlite:///{database}")
    try:
        assert {"jobs", "users", "tokens"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_parts_refuse_a_database_an_older_gpulab_left_and_migrate_says_what_it_did(tmp_path: Path) -> None:
    # An admin who upgrades gpulab and starts it before `gpulab migrate` got a running API that
    # answered every read of a new column with a 500; `migrate` then said only "up to date".
    from alembic.script import ScriptDirectory

    from migrations.migrate import alembic_config, upgrade

    state = tmp_path / "state"
    state.mkdir()
    url = f"sqlite:///{state / 'gpulab.sqlite3'}"
    scripts = ScriptDirectory.from_config(alembic_config(url))
    head = scripts.get_current_head()
    assert head is not None
    older = scripts.get_revision(head).down_revision
    assert isinstance(older, str)
    upgrade(url, older)
    env = {**os.environ, "GPULAB_STATE_DIR": str(state), "GPULAB_DATABASE_URL": "",
           "GPULAB_REDIS_URL": "redis://127.0.0.1:1/0"}

    def gpulab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    for part in (("api", "--port", "1"), ("dispatcher",), ("worker", "--device", "cpu")):
        done = gpulab(*part)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, (part, done.stderr)
        assert f"at revision {older}" in lines[0] and f"needs {head}" in lines[0], lines[0]
        assert "run `gpulab migrate`" in lines[0]
    done = gpulab("migrate")
    assert done.returncode == 0 and f"migrated from {older} to {head}" in done.stderr, done.stderr
    done = gpulab("migrate")
    assert done.returncode == 0 and f"is up to date ({head})" in done.stderr, done.stderr
