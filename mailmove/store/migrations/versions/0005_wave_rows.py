"""the rows of waves, loaded by the wave's workflow in pages

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wave_rows",
        sa.Column("batch", sa.String(length=40), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("wave_id", sa.String(length=200), nullable=False),
        sa.Column("workflow_id", sa.String(length=300), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("batch", "line"),
    )
    op.create_index("ix_wave_rows_wave_id", "wave_rows", ["wave_id"])


def downgrade() -> None:
    op.drop_index("ix_wave_rows_wave_id", table_name="wave_rows")
    op.drop_table("wave_rows")
