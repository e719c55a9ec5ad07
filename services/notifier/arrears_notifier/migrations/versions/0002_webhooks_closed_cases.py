"""notifier: provider status and claim time per notification, closed cases, case and in-flight indexes

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
    # The last provider status applied (status callbacks repeat and arrive out of order).
    op.add_column("notifications", sa.Column("provider_status", sa.Text, nullable=True), schema="notifier")
    op.add_column(
        "notifications", sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True), schema="notifier"
    )
    op.create_index("ix_notifier_case", "notifications", ["case_id"], schema="notifier")
    op.create_index(
        "ix_notifier_in_flight",
        "notifications",
        ["status", "updated_at"],
        schema="notifier",
        postgresql_where=sa.text("status IN ('claimed', 'sending')"),
    )
    op.create_table(
        "closed_cases",
        sa.Column("case_id", sa.Text, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        schema="notifier",
    )


def downgrade() -> None:
    op.drop_table("closed_cases", schema="notifier")
    op.drop_index("ix_notifier_in_flight", table_name="notifications", schema="notifier")
    op.drop_index("ix_notifier_case", table_name="notifications", schema="notifier")
    op.drop_column("notifications", "claimed_at", schema="notifier")
    op.drop_column("notifications", "provider_status", schema="notifier")
