"""The case manager's tables, in the ``case_manager`` schema (migrations/versions/ is the source of truth)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from arrears_shared.messaging.tables import inbox_table, outbox_table

SCHEMA = "case_manager"
metadata = MetaData(schema=SCHEMA)
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
TS = DateTime(timezone=True)

# The latest account state from scoring, and when it must next be looked at (the timer).
accounts = Table(
    "accounts",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("state", JSONB, nullable=False),
    Column("wake_at", TS, nullable=True),
    Column("updated_at", TS, nullable=False),
)
Index("ix_case_manager_accounts_wake_at", accounts.c.wake_at, postgresql_where=accounts.c.wake_at.isnot(None))

# Receivables history for the period KPIs (0004), written with each applied account state
# (CaseRepository.record_receivables): an account's open and not-yet-due receivables per currency,
# one row per day on which they changed (the latest row on or before a day is the balance that day).
receivable_snapshots = Table(
    "receivable_snapshots",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("currency", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("open_minor", BigInteger, nullable=False),
    Column("current_minor", BigInteger, nullable=False),
)

# Every invoice seen open in an account state: the credit sales of a period are those issued in it.
invoices_issued = Table(
    "invoices_issued",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("invoice_id", Text, primary_key=True),
    Column("currency", Text, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("issue_date", Date, nullable=False),
)
Index("ix_case_manager_invoices_issued_issue_date", invoices_issued.c.issue_date)

cases = Table(
    "cases",
    metadata,
    Column("case_id", Text, primary_key=True),
    Column("account_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("stage", Text, nullable=True),
    Column("opened_at", TS, nullable=False),
    Column("closed_at", TS, nullable=True),
    Column("next_action_at", TS, nullable=True),
    Column("assignee", Text, nullable=True),
    Column("credit_hold", Text, nullable=False, server_default=text("'none'")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    # Worklist columns, kept current by every evaluation (0002).
    Column("tier", Text, nullable=True),
    Column("currency", Text, nullable=True),
    Column("overdue_minor", BigInteger, nullable=False, server_default=text("0")),
    Column("opened_overdue_minor", BigInteger, nullable=False, server_default=text("0")),
    Column("priority", BigInteger, nullable=False, server_default=text("0")),
    Column("closed_reason", Text, nullable=True),
    Column("paused_until", TS, nullable=True),
)
Index(
    "uq_case_manager_open_case_per_account",
    cases.c.account_id,
    unique=True,
    postgresql_where=cases.c.status.notin_(["resolved", "written_off"]),
)

# The latest case of an account without an open one (0005; of the closed cases only since 0006).
Index(
    "ix_case_manager_cases_account_opened",
    cases.c.account_id,
    cases.c.opened_at,
    postgresql_where=cases.c.status.in_(["resolved", "written_off"]),
)

timeline = Table(
    "timeline",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("case_id", Text, nullable=False, index=True),
    Column("at", TS, nullable=False),
    Column("kind", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("data", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)

promises = Table(
    "promises",
    metadata,
    Column("promise_id", Text, primary_key=True),
    Column("case_id", Text, nullable=False, index=True),
    Column("currency", Text, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("promised_date", Date, nullable=False),
    Column("baseline_open_minor", BigInteger, nullable=False),
    # The invoices open in the currency when it was agreed: payments are measured against them only,
    # so an invoice issued later does not make a kept promise look broken.
    Column("invoice_ids", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("status", Text, nullable=False),  # pending | kept | broken | cancelled
    Column("created_at", TS, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("settled_at", TS, nullable=True),
)

payment_plans = Table(
    "payment_plans",
    metadata,
    Column("plan_id", Text, primary_key=True),
    Column("case_id", Text, nullable=False, index=True),
    Column("currency", Text, nullable=False),
    Column("baseline_open_minor", BigInteger, nullable=False),
    # The invoices open in the currency when it was agreed: payments are measured against them only,
    # so an invoice issued later does not make a kept promise look broken.
    Column("invoice_ids", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("installments", JSONB, nullable=False),  # [{seq, due_date, amount_minor, status}]
    Column("status", Text, nullable=False),  # active | completed | defaulted | cancelled
    Column("created_at", TS, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("settled_at", TS, nullable=True),
)

disputes = Table(
    "disputes",
    metadata,
    Column("dispute_id", Text, primary_key=True),
    Column("case_id", Text, nullable=False, index=True),
    Column("invoice_ids", JSONB, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", Text, nullable=False),  # open | resolved
    Column("resolution", Text, nullable=True),
    Column("opened_at", TS, nullable=False),
    Column("opened_by", Text, nullable=False),
    Column("resolved_at", TS, nullable=True),
    Column("resolved_by", Text, nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("secret_hash", Text, nullable=False),
    Column("scopes", JSONB, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("revoked_at", TS, nullable=True),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("principal", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("body", JSONB, nullable=False),
    Column("created_at", TS, nullable=False),
)
