"""The seed's schema: definitions, executions, task checkpoints, agents.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workflow_definitions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("source_path", sa.Text),
        sa.Column("source_commit", sa.String(64)),
        sa.Column("source_branch", sa.Text),
        sa.Column("source_author", sa.Text),
        sa.Column("applied_at", TZ, nullable=False),
        sa.Column("applied_by", sa.Text),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_index("ix_workflow_definitions_name", "workflow_definitions", ["name"])
    op.create_table(
        "workflow_executions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("definition_id", sa.Integer, sa.ForeignKey("workflow_definitions.id")),
        sa.Column("pipeline", sa.String(63), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("ir", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("started_at", TZ),
        sa.Column("finished_at", TZ),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_expires_at", TZ),
    )
    op.create_index("ix_workflow_executions_status", "workflow_executions", ["status"])
    op.create_index(
        "ix_workflow_executions_pipeline_created", "workflow_executions", ["pipeline", "created_at"]
    )
    op.create_table(
        "task_executions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "execution_id", sa.String(36), sa.ForeignKey("workflow_executions.id"), nullable=False
        ),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", sa.JSON),
        sa.Column("output", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("started_at", TZ),
        sa.Column("finished_at", TZ),
    )
    op.create_index("ix_task_executions_execution", "task_executions", ["execution_id", "id"])
    op.create_table(
        "agent_definitions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_index("ix_agent_definitions_name", "agent_definitions", ["name"])


def downgrade() -> None:
    op.drop_table("agent_definitions")
    op.drop_table("task_executions")
    op.drop_table("workflow_executions")
    op.drop_table("workflow_definitions")
