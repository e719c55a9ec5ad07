"""The outbox and inbox tables, defined once and placed in each service's own schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB


def outbox_table(metadata: MetaData) -> Table:
    """Events waiting to be published. A row is deleted once the broker has acknowledged it."""
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("topic", Text, nullable=False),
        Column("key", Text, nullable=True),
        Column("shard", SmallInteger, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False, server_default="{}"),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def inbox_table(metadata: MetaData) -> Table:
    """Event identities a consumer has applied, written in the same transaction as the effect."""
    table = Table(
        "inbox",
        metadata,
        Column("consumer", Text, primary_key=True),
        Column("event_key", Text, primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    Index(f"ix_{metadata.schema}_inbox_processed_at", table.c.processed_at)
    return table


def create_messaging_tables(connection: object, schema: str) -> None:
    """Create the outbox and inbox in ``schema`` (called from each service's first migration)."""
    from sqlalchemy.engine import Connection

    assert isinstance(connection, Connection)
    metadata = MetaData(schema=schema)
    outbox_table(metadata)
    inbox_table(metadata)
    metadata.create_all(connection)
