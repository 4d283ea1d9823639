"""Alembic migrations of the history, run by `flowctl db upgrade` or on first use.

Opening the history checks the stored revision with one query; Alembic itself (slow
to import) is loaded only when an upgrade is needed.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect, text

HEAD_REVISION = "0003"
MIGRATIONS = Path(__file__).parent / "migrations"


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("select version_num from alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def ensure_current(engine: Engine) -> None:
    if current_revision(engine) != HEAD_REVISION:
        upgrade(engine)
