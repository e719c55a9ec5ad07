"""notifier: outbox, inbox, notifications, suppressions

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from arrears_shared.messaging.tables import create_messaging_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables(op.get_bind(), "notifier")
    op.create_table(
        "notifications",
        sa.Column("notification_id", sa.Text, primary_key=True),
        sa.Column("case_id", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("locale", sa.Text, nullable=False),
        sa.Column("recipient", JSONB, nullable=False),
        sa.Column("variables", JSONB, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("provider_message_id", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema="notifier",
    )
    op.create_index(
        "ix_notifier_due",
        "notifications",
        ["next_attempt_at"],
        schema="notifier",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_notifier_cap", "notifications", ["account_id", "channel", "sent_at"], schema="notifier")
    op.create_index("ix_notifier_provider_id", "notifications", ["provider_message_id"], schema="notifier")
    op.create_table(
        "suppressions",
        sa.Column("channel", sa.Text, primary_key=True),
        sa.Column("address_hash", sa.Text, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        schema="notifier",
    )


def downgrade() -> None:
    for table in ("suppressions", "notifications", "inbox", "outbox"):
        op.drop_table(table, schema="notifier")
