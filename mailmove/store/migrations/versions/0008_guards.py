"""the guards of finished moves: baseline, drift, what was mailed

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guards",
        sa.Column("workflow_id", sa.String(length=300), nullable=False),
        sa.Column("schedule_id", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("subject", sa.String(length=260), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("baseline", sa.JSON(), nullable=True),
        sa.Column("drift", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("mailed", sa.String(length=64), nullable=False),
        sa.Column("drift_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id"),
    )
    op.create_index("ix_guards_subject", "guards", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_guards_subject", table_name="guards")
    op.drop_table("guards")
