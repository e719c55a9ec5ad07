"""scoring: account summary columns, open items, balances per currency, dirty accounts, risk models

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

S = "scoring"


def upgrade() -> None:
    op.add_column("documents", sa.Column("event_id", sa.Text), schema=S)
    for name, type_ in [
        ("tier", sa.Text),
        ("probability", sa.Float),
        ("max_days_past_due", sa.Integer),
        ("oldest_due_date", sa.Date),
        ("aged_on", sa.Date),
        ("base_logit", sa.Float),
    ]:
        op.add_column("accounts", sa.Column(name, type_), schema=S)
    op.create_index("accounts_tier", "accounts", ["tier", "account_id"], schema=S)
    op.create_table(
        "open_items",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("invoice_id", sa.Text, primary_key=True),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("open_minor", sa.BigInteger, nullable=False),
        sa.Column("due_date", sa.Date, nullable=False),
        sa.Column("static_logit", sa.Float, nullable=False),
        schema=S,
    )
    op.create_table(
        "account_balances",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("currency", sa.Text, primary_key=True),
        sa.Column("open_minor", sa.BigInteger, nullable=False),
        sa.Column("overdue_minor", sa.BigInteger, nullable=False),
        sa.Column("credit_minor", sa.BigInteger, nullable=False),
        schema=S,
    )
    op.create_index("account_balances_currency", "account_balances", ["currency", "overdue_minor"], schema=S)
    op.create_table(
        "dirty_accounts",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_index("dirty_accounts_since", "dirty_accounts", ["since"], schema=S)
    op.create_table(
        "risk_models",
        sa.Column("version", sa.Text, primary_key=True),
        sa.Column("model", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("risk_models", schema=S)
    op.drop_table("dirty_accounts", schema=S)
    op.drop_table("account_balances", schema=S)
    op.drop_table("open_items", schema=S)
    op.drop_index("accounts_tier", table_name="accounts", schema=S)
    for name in ["base_logit", "aged_on", "oldest_due_date", "max_days_past_due", "probability", "tier"]:
        op.drop_column("accounts", name, schema=S)
    op.drop_column("documents", "event_id", schema=S)
