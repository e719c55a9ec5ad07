"""ingest: import batches, per-source API keys, accounts' default terms

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imports",
        sa.Column("import_id", sa.Text, primary_key=True),
        sa.Column("format", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("filename", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted", sa.Integer, nullable=False),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.Column("conflicts", sa.Integer, nullable=False),
        sa.Column("rejected", sa.Integer, nullable=False),
        sa.Column("ignored", sa.Integer, nullable=False),
        sa.Column("items", JSONB, nullable=False),
        schema="ingest",
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("secret_sha256", sa.Text, nullable=False),
        sa.Column("signing_secret", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        schema="ingest",
    )
    op.create_table(
        "account_terms",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("days", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema="ingest",
    )
    op.create_index("invoice_numbers_by_number", "invoice_numbers", ["invoice_number"], schema="ingest")


def downgrade() -> None:
    op.drop_index("invoice_numbers_by_number", table_name="invoice_numbers", schema="ingest")
    op.drop_table("account_terms", schema="ingest")
    op.drop_table("api_keys", schema="ingest")
    op.drop_table("imports", schema="ingest")
