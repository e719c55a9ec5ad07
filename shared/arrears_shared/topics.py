"""Every Kafka topic Arrears uses, in one place (DESIGN.md, "Shape")."""

from __future__ import annotations

from dataclasses import dataclass

INBOUND = "ar.inbound.v1"
LEDGER = "ar.ledger.v1"
ACCOUNTS = "ar.accounts.v1"
NOTIFICATIONS = "collections.notifications.v1"
DELIVERIES = "collections.deliveries.v1"
EVENTS = "collections.events.v1"
DLQ = "collections.dlq.v1"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    description: str


_DAY_MS = 24 * 3600 * 1000

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(INBOUND, 12, 7 * _DAY_MS, "raw CloudEvents published by ERP systems"),
    TopicSpec(LEDGER, 12, 30 * _DAY_MS, "validated canonical ledger events from ingest"),
    TopicSpec(ACCOUNTS, 12, 30 * _DAY_MS, "account receivables state and risk from scoring"),
    TopicSpec(NOTIFICATIONS, 12, 7 * _DAY_MS, "notification requests from case_manager"),
    TopicSpec(DELIVERIES, 12, 7 * _DAY_MS, "delivery outcomes from notifier"),
    TopicSpec(EVENTS, 12, 30 * _DAY_MS, "collections events for the ERP and other systems"),
    TopicSpec(DLQ, 3, 30 * _DAY_MS, "messages that could not be processed, with the reason"),
)
