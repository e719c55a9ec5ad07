"""The case manager's tables, in the ``case_manager`` schema."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, MetaData, Table, Text, text
from sqlalchemy.dialects.postgresql import JSONB

from arrears_shared.messaging.tables import inbox_table, outbox_table

SCHEMA = "case_manager"
metadata = MetaData(schema=SCHEMA)
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

# The latest account state from scoring, and when it must next be looked at (the timer).
accounts = Table(
    "accounts",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("state", JSONB, nullable=False),
    Column("wake_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_case_manager_accounts_wake_at", accounts.c.wake_at, postgresql_where=accounts.c.wake_at.isnot(None))

cases = Table(
    "cases",
    metadata,
    Column("case_id", Text, primary_key=True),
    Column("account_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("stage", Text, nullable=True),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    Column("next_action_at", DateTime(timezone=True), nullable=True),
    Column("assignee", Text, nullable=True),
    Column("credit_hold", Text, nullable=False, server_default=text("'none'")),
    Column("version", Integer, nullable=False, server_default=text("1")),
)
Index(
    "uq_case_manager_open_case_per_account",
    cases.c.account_id,
    unique=True,
    postgresql_where=cases.c.status.notin_(["resolved", "written_off"]),
)

timeline = Table(
    "timeline",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("case_id", Text, nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("data", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)
