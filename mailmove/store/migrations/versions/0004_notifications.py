"""e-mails sent to a move's contact

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=300), nullable=False),
        sa.Column("event", sa.String(length=20), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("message_id", sa.String(length=400), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_notifications_workflow_id", "notifications", ["workflow_id"])


def downgrade() -> None:
    op.drop_index("ix_notifications_workflow_id", table_name="notifications")
    op.drop_table("notifications")
