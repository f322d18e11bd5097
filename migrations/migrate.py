"""Run the Alembic migrations programmatically (`gpulab migrate`, `gpulab up`, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations


def alembic_config(database_url: str) -> Config:
    """An Alembic config for gpulab's migrations and this database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to `revision` (head: the newest)."""
    command.upgrade(alembic_config(database_url), revision)


def check(database_url: str) -> None:
    """Raise if the models and the migrations disagree (alembic check)."""
    command.check(alembic_config(database_url))


def revisions(database_url: str) -> tuple[str | None, str]:
    """The database's revision (None: never migrated) and the newest one this gpulab carries."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, pool

    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert head is not None, "gpulab ships its migrations"
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision(), head
    finally:
        engine.dispose()


def behind(database_url: str) -> tuple[str, str] | None:
    """(the database's revision, the newest) when the database is an older gpulab's, else None.

    A database a newer gpulab migrated is not behind: during an upgrade the old parts on other
    servers run beside it until they are replaced.
    """
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    current, head = revisions(database_url)
    if current is None or current == head:
        return None
    try:
        ScriptDirectory.from_config(alembic_config(database_url)).get_revision(current)
    except CommandError:  # a revision this gpulab does not know: a newer one's
        return None
    return current, head
