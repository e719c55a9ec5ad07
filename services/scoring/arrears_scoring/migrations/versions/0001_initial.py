"""scoring: outbox, inbox, ledger documents, account states

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
    create_messaging_tables(op.get_bind(), "scoring")
    op.execute("CREATE SEQUENCE scoring.documents_seq")
    op.create_table(
        "documents",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("doc_id", sa.Text, primary_key=True),
        sa.Column("ref_id", sa.Text),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False, server_default=sa.text("nextval('scoring.documents_seq')")),
        schema="scoring",
    )
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", JSONB, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema="scoring",
    )


def downgrade() -> None:
    op.drop_table("accounts", schema="scoring")
    op.drop_table("documents", schema="scoring")
    op.execute("DROP SEQUENCE scoring.documents_seq")
    op.drop_table("inbox", schema="scoring")
    op.drop_table("outbox", schema="scoring")
