"""GitOps registry: one active version per pipeline name, and the activation timeline.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "uq_workflow_definitions_active_name",
        "workflow_definitions",
        ["name"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "definition_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_version", sa.Integer),
        sa.Column("to_version", sa.Integer),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.Text),
    )
    op.create_index("ix_definition_events_name_id", "definition_events", ["name", "id"])


def downgrade() -> None:
    op.drop_table("definition_events")
    op.drop_index("uq_workflow_definitions_active_name", "workflow_definitions")
