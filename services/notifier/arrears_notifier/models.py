"""The notifier's tables, in the ``notifier`` schema."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

from arrears_shared.messaging.tables import inbox_table, outbox_table

SCHEMA = "notifier"
metadata = MetaData(schema=SCHEMA)
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

notifications = Table(
    "notifications",
    metadata,
    Column("notification_id", Text, primary_key=True),
    Column("case_id", Text, nullable=False),
    Column("account_id", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("template", Text, nullable=False),
    Column("locale", Text, nullable=False),
    Column("recipient", JSONB, nullable=False),
    Column("variables", JSONB, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    # pending -> claimed -> sending -> sent -> delivered | failed; a deferral stays pending with a
    # reason and a later next_attempt_at; suppressed is final (deliveries/service.py explains the states)
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("provider_message_id", Text, nullable=True),
    Column("reason", Text, nullable=True),
    # Last provider status applied from a status callback (queued, sent, delivered, undelivered, failed).
    Column("provider_status", Text, nullable=True),
    # When this attempt was handed to the provider (what a recovery asks the provider about).
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_notifier_due", notifications.c.next_attempt_at, postgresql_where=notifications.c.status == "pending")
Index("ix_notifier_cap", notifications.c.account_id, notifications.c.channel, notifications.c.sent_at)
Index("ix_notifier_provider_id", notifications.c.provider_message_id)
Index("ix_notifier_case", notifications.c.case_id)
Index(
    "ix_notifier_in_flight",
    notifications.c.status,
    notifications.c.updated_at,
    postgresql_where=notifications.c.status.in_(["claimed", "sending"]),
)

# Addresses never to contact again (STOP keywords, unsubscribe links, hard bounces), kept hashed.
suppressions = Table(
    "suppressions",
    metadata,
    Column("channel", Text, primary_key=True),
    Column("address_hash", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# Cases that are resolved or written off: nothing more is sent for them.
closed_cases = Table(
    "closed_cases",
    metadata,
    Column("case_id", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)
