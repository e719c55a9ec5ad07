"""Scoring's tables, in the ``scoring`` schema: the documents of each account's ledger and the
account state last published. Allocations are derived from the documents, never stored as truth."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Date, DateTime, Float, Integer, MetaData, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB

from arrears_shared.messaging.tables import inbox_table, outbox_table

SCHEMA = "scoring"
metadata = MetaData(schema=SCHEMA)
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

# Every ledger document of an account, keyed by kind and id. ``data`` is the canonical v1
# payload; ``at`` is the event time (orders adjustments of one invoice).
documents = Table(
    "documents",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("kind", Text, primary_key=True),  # customer|invoice|adjustment|cancellation|credit_note|payment|reversal
    Column("doc_id", Text, primary_key=True),
    Column("ref_id", Text, nullable=True),  # the invoice or payment an adjustment/cancellation/reversal names
    Column("data", JSONB, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("seq", BigInteger, nullable=False, server_default=func.nextval("scoring.documents_seq")),
    Column("event_id", Text, nullable=True),  # breaks ties between newest-wins copies of one time
)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("state", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Summary kept in step with ``state`` by every recompute, for filters and the daily re-age.
    Column("tier", Text, nullable=True),
    Column("probability", Float, nullable=True),
    Column("max_days_past_due", Integer, nullable=True),
    Column("oldest_due_date", Date, nullable=True),
    Column("aged_on", Date, nullable=True),  # the day the published ages were computed for
    Column("base_logit", Float, nullable=True),  # the risk logit when nothing is open
)

# The open invoices of every account as last computed: the daily re-age works on these alone.
open_items = Table(
    "open_items",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("invoice_id", Text, primary_key=True),
    Column("currency", Text, nullable=False),
    Column("open_minor", BigInteger, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("static_logit", Float, nullable=False),  # risk logit without the days-past-due term
)

account_balances = Table(
    "account_balances",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("currency", Text, primary_key=True),
    Column("open_minor", BigInteger, nullable=False),
    Column("overdue_minor", BigInteger, nullable=False),
    Column("credit_minor", BigInteger, nullable=False),
)

# Accounts whose documents changed since their state was last published (written in the same
# transaction as the documents; the publisher drains it in bulk, so a burst of events on one
# account publishes one new version, and nothing is lost if a process dies in between).
dirty_accounts = Table(
    "dirty_accounts",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("since", DateTime(timezone=True), nullable=False),
)

# Fitted risk models, newest active one in use. ``model`` is the JSON artifact (coefficients).
risk_models = Table(
    "risk_models",
    metadata,
    Column("version", Text, primary_key=True),
    Column("model", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("active", Boolean, nullable=False, server_default="true"),
)
