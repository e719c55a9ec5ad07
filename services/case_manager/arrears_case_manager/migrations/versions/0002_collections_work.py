"""case_manager: worklist columns, promises, payment plans, disputes, API keys, idempotency keys

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

S = "case_manager"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("cases", sa.Column("tier", sa.Text, nullable=True), schema=S)
    op.add_column("cases", sa.Column("currency", sa.Text, nullable=True), schema=S)
    op.add_column("cases", sa.Column("overdue_minor", sa.BigInteger, nullable=False, server_default="0"), schema=S)
    op.add_column(
        "cases", sa.Column("opened_overdue_minor", sa.BigInteger, nullable=False, server_default="0"), schema=S
    )
    op.add_column("cases", sa.Column("priority", sa.BigInteger, nullable=False, server_default="0"), schema=S)
    op.add_column("cases", sa.Column("closed_reason", sa.Text, nullable=True), schema=S)
    op.add_column("cases", sa.Column("paused_until", TS, nullable=True), schema=S)
    # The worklist pages through (priority, case_id) descending and (opened_at, case_id) ascending with
    # row-value comparisons, so that each page is an index range scan however deep the cursor is.
    op.create_index("ix_case_manager_cases_priority", "cases", ["priority", "case_id"], schema=S)
    op.create_index("ix_case_manager_cases_age", "cases", ["opened_at", "case_id"], schema=S)
    op.create_index("ix_case_manager_cases_status", "cases", ["status", "priority", "case_id"], schema=S)
    # A collector's own worklist, oldest first.
    op.create_index("ix_case_manager_cases_assignee_age", "cases", ["assignee", "opened_at", "case_id"], schema=S)
    op.create_table(
        "promises",
        sa.Column("promise_id", sa.Text, primary_key=True),
        sa.Column("case_id", sa.Text, nullable=False, index=True),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("promised_date", sa.Date, nullable=False),
        sa.Column("baseline_open_minor", sa.BigInteger, nullable=False),
        sa.Column("invoice_ids", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("settled_at", TS, nullable=True),
        schema=S,
    )
    op.create_table(
        "payment_plans",
        sa.Column("plan_id", sa.Text, primary_key=True),
        sa.Column("case_id", sa.Text, nullable=False, index=True),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("baseline_open_minor", sa.BigInteger, nullable=False),
        sa.Column("invoice_ids", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("installments", JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("settled_at", TS, nullable=True),
        schema=S,
    )
    op.create_table(
        "disputes",
        sa.Column("dispute_id", sa.Text, primary_key=True),
        sa.Column("case_id", sa.Text, nullable=False, index=True),
        sa.Column("invoice_ids", JSONB, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("resolution", sa.Text, nullable=True),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("opened_by", sa.Text, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolved_by", sa.Text, nullable=True),
        schema=S,
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("scopes", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        schema=S,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("principal", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("body", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        schema=S,
    )


def downgrade() -> None:
    for table in ("idempotency_keys", "api_keys", "disputes", "payment_plans", "promises"):
        op.drop_table(table, schema=S)
    for index in (
        "ix_case_manager_cases_assignee_age",
        "ix_case_manager_cases_status",
        "ix_case_manager_cases_age",
        "ix_case_manager_cases_priority",
    ):
        op.drop_index(index, table_name="cases", schema=S)
    for column in (
        "paused_until",
        "closed_reason",
        "priority",
        "opened_overdue_minor",
        "overdue_minor",
        "currency",
        "tier",
    ):
        op.drop_column("cases", column, schema=S)
