"""case_manager: receivables history (per account, currency and day) and invoices issued, for the KPIs

Revision ID: 0004
Revises: 0003

Backfilled from the latest account states, so that a period starting after this migration has its
beginning receivables; nothing before the latest states can be recovered.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

S = "case_manager"


def upgrade() -> None:
    op.create_table(
        "receivable_snapshots",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("currency", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("open_minor", sa.BigInteger, nullable=False),
        sa.Column("current_minor", sa.BigInteger, nullable=False),
        schema=S,
    )
    op.create_table(
        "invoices_issued",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("invoice_id", sa.Text, primary_key=True),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("issue_date", sa.Date, nullable=False),
        schema=S,
    )
    op.create_index("ix_case_manager_invoices_issued_issue_date", "invoices_issued", ["issue_date"], schema=S)
    op.execute(
        """
        INSERT INTO case_manager.receivable_snapshots (account_id, currency, day, open_minor, current_minor)
        SELECT a.account_id, b->>'currency', ((a.state->>'as_of')::timestamptz AT TIME ZONE 'UTC')::date,
               sum((b->>'open_minor')::bigint), sum(coalesce((b->'buckets'->>'current')::bigint, 0))
        FROM case_manager.accounts a, jsonb_array_elements(a.state->'balances') b
        GROUP BY 1, 2, 3
        """
    )
    op.execute(
        """
        INSERT INTO case_manager.invoices_issued (account_id, invoice_id, currency, amount_minor, issue_date)
        SELECT DISTINCT ON (a.account_id, i->>'invoice_id') a.account_id, i->>'invoice_id', i->>'currency',
               (i->>'amount_minor')::bigint, (i->>'issue_date')::date
        FROM case_manager.accounts a, jsonb_array_elements(a.state->'open_invoices') i
        """
    )


def downgrade() -> None:
    op.drop_table("invoices_issued", schema=S)
    op.drop_table("receivable_snapshots", schema=S)
