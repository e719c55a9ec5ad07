"""ingest: outbox, inbox, received events, invoice numbers

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from arrears_shared.messaging.tables import create_messaging_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables(op.get_bind(), "ingest")
    op.create_table(
        "received_events",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema="ingest",
    )
    op.create_table(
        "invoice_numbers",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("invoice_number", sa.Text, primary_key=True),
        sa.Column("invoice_id", sa.Text, nullable=False),
        schema="ingest",
    )


def downgrade() -> None:
    for table in ("invoice_numbers", "received_events", "inbox", "outbox"):
        op.drop_table(table, schema="ingest")
