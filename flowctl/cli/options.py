"""Options and settings that several command modules share."""

from __future__ import annotations

import click

from flowctl.config import Settings

database_option = click.option(
    "--database-url",
    envvar="FLOWCTL_DATABASE_URL",
    default=None,
    help="History database (default: sqlite:///.flowctl/flowctl.db; env FLOWCTL_DATABASE_URL).",
)
output_option = click.option(
    "--output",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)


def settings_for(database_url: str | None) -> Settings:
    """The environment's settings, with `--database-url` winning over FLOWCTL_DATABASE_URL."""
    settings = Settings.from_env()
    return settings.with_database(database_url) if database_url else settings
