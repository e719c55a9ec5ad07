"""Ingest's tables, in the ``ingest`` schema."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, Table, Text, func

from arrears_shared.messaging.tables import inbox_table, outbox_table

SCHEMA = "ingest"
metadata = MetaData(schema=SCHEMA)
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

# One row per (source, id) accepted: the idempotency key of every event that entered Arrears.
received_events = Table(
    "received_events",
    metadata,
    Column("source", Text, primary_key=True),
    Column("event_id", Text, primary_key=True),
    Column("type", Text, nullable=False),
    Column("account_id", Text, nullable=True),
    Column("digest", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# An invoice number belongs to one invoice of an account; reusing it for another is a conflict.
invoice_numbers = Table(
    "invoice_numbers",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("invoice_number", Text, primary_key=True),
    Column("invoice_id", Text, nullable=False),
)
