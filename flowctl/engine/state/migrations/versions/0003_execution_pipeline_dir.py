"""Executions remember their pipeline's folder, so a resume resolves relative paths alike.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflow_executions", sa.Column("pipeline_dir", sa.Text))


def downgrade() -> None:
    op.drop_column("workflow_executions", "pipeline_dir")
