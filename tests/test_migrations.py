"""Migrations: upgrade from empty works on both databases, and the models have not drifted."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from migrations.migrate import check, upgrade
from service.models import Base


def test_upgrade_from_empty_and_no_drift(empty_database_url: str) -> None:
    # From empty to the newest; a second upgrade is a no-op, and alembic check finds nothing.
    upgrade(empty_database_url)
    upgrade(empty_database_url)
    check(empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables
