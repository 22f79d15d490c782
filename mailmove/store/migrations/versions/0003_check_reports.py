"""check reports stored by the moves' preflight and done stages

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
    op.create_table(
        "check_reports",
        sa.Column("workflow_id", sa.String(length=300), nullable=False),
        sa.Column("stage", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("subject", sa.String(length=260), nullable=False),
        sa.Column("worst", sa.String(length=20), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", "stage"),
    )


def downgrade() -> None:
    op.drop_table("check_reports")
