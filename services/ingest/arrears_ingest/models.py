"""Ingest's tables, in the ``ingest`` schema."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Integer, MetaData, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB

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

# One row per document or file posted (UBL, camt, CSV): its counts and every item's outcome.
imports = Table(
    "imports",
    metadata,
    Column("import_id", Text, primary_key=True),
    Column("format", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("filename", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("accepted", Integer, nullable=False),
    Column("duplicates", Integer, nullable=False),
    Column("conflicts", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("ignored", Integer, nullable=False),
    Column("items", JSONB, nullable=False),
)

# Per-source API keys: only a SHA-256 of the key's secret is kept. The optional webhook signing
# secret is kept as given, because verifying an HMAC needs it.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("source", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("secret_sha256", Text, nullable=False),
    Column("signing_secret", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# An account's default payment terms: the due date of an invoice that states neither a due date
# nor terms of its own.
account_terms = Table(
    "account_terms",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("days", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
