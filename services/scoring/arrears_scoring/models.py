"""Scoring's tables, in the ``scoring`` schema: the documents of each account's ledger and the
account state last published. Allocations are derived from the documents, never stored as truth."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, Table, Text, func
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
)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("state", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
