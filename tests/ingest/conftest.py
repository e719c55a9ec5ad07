from __future__ import annotations

import pytest

from tests.conftest import Databases, migrated_database


@pytest.fixture(scope="package")
def ingest_db(databases: Databases, broker: str) -> str:
    """A database of its own for ingest's tests (its outbox is inspected, never relayed)."""
    return migrated_database(databases, broker, "ingest_tests")
