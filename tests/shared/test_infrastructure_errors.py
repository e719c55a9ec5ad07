"""Which database errors stall a partition for a retry (infrastructure) and which are the event's fault."""

from __future__ import annotations

import pytest
from sqlalchemy import BigInteger, bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from arrears_shared.messaging.consumer import is_infrastructure


async def test_a_value_the_driver_cannot_encode_is_the_events_fault_not_infrastructure(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        with pytest.raises(DBAPIError) as caught:
            await conn.execute(
                text("SELECT :amount").bindparams(bindparam("amount", type_=BigInteger)), {"amount": 2**70}
            )
    # Retrying it would stall every partition of the poll forever, so it is dead-lettered like any
    # bad event (is_infrastructure also looks under an InterfaceError for the driver's DataError).
    assert not is_infrastructure(caught.value)


async def test_a_lost_connection_is_infrastructure(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with engine.connect() as killer:
            await killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as caught:
            await conn.execute(text("SELECT 1"))
    assert is_infrastructure(caught.value)
