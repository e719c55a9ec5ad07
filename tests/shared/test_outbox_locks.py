"""Each outbox table's relay locks its shards in its own advisory-lock namespace, so that services whose
schemas share one database never hold, and so skip, each other's shards."""

from __future__ import annotations

import importlib

from arrears_shared.messaging.outbox import lock_namespace

SERVICES = ("ingest", "scoring", "case_manager", "notifier")


def test_every_service_outbox_has_its_own_lock_namespace() -> None:
    tables = [importlib.import_module(f"arrears_{s}.models").outbox for s in SERVICES]
    namespaces = [lock_namespace(t) for t in tables]
    assert len(set(namespaces)) == len(SERVICES)
    assert all(0 <= n <= 2**31 - 1 for n in namespaces), "the first key of pg_try_advisory_xact_lock(int, int)"
    assert lock_namespace(tables[0]) == lock_namespace(tables[0]), "stable across relays and processes"
