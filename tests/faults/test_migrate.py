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
