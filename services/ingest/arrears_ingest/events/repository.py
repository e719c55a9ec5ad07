"""The only place ingest's event tables are queried.

Batches are passed as arrays and expanded with ``unnest`` so that one statement of fixed text
serves any batch size: the statements are compiled once and prepared once, instead of a
multi-row VALUES list compiled afresh for every batch (which cost more than the database work).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_ingest.models import SCHEMA
from arrears_shared.db import copy_rows

_TEXTS = ARRAY(Text)

_RECORD = text(
    f"INSERT INTO {SCHEMA}.received_events (source, event_id, type, account_id, digest) "  # noqa: S608
    "SELECT * FROM unnest(:sources, :ids, :types, :accounts, :digests) "
    "ON CONFLICT DO NOTHING RETURNING source, event_id"
).bindparams(
    bindparam("sources", type_=_TEXTS),
    bindparam("ids", type_=_TEXTS),
    bindparam("types", type_=_TEXTS),
    bindparam("accounts", type_=_TEXTS),
    bindparam("digests", type_=_TEXTS),
)

# The usual batch is all new keys and all new invoice numbers: written by COPY (no ON CONFLICT, no
# RETURNING), which costs PostgreSQL markedly less per row than ON CONFLICT DO NOTHING's speculative
# insertion, and less than an INSERT of unnested arrays.
_RECEIVED_COLUMNS = ("source", "event_id", "type", "account_id", "digest")
_CLAIM_COLUMNS = ("account_id", "invoice_number", "invoice_id")

_DIGESTS = text(
    f"SELECT r.source, r.event_id, r.digest FROM {SCHEMA}.received_events r "  # noqa: S608
    "JOIN unnest(:sources, :ids) AS k(source, event_id) ON r.source = k.source AND r.event_id = k.event_id"
).bindparams(bindparam("sources", type_=_TEXTS), bindparam("ids", type_=_TEXTS))

_FORGET = text(
    f"DELETE FROM {SCHEMA}.received_events r USING unnest(:sources, :ids) AS k(source, event_id) "  # noqa: S608
    "WHERE r.source = k.source AND r.event_id = k.event_id"
).bindparams(bindparam("sources", type_=_TEXTS), bindparam("ids", type_=_TEXTS))

_CLAIM = text(
    f"INSERT INTO {SCHEMA}.invoice_numbers (account_id, invoice_number, invoice_id) "  # noqa: S608
    "SELECT * FROM unnest(:accounts, :numbers, :invoices) ON CONFLICT DO NOTHING "
    "RETURNING account_id, invoice_number, invoice_id"
).bindparams(
    bindparam("accounts", type_=_TEXTS), bindparam("numbers", type_=_TEXTS), bindparam("invoices", type_=_TEXTS)
)

_OWNERS = text(
    f"SELECT n.account_id, n.invoice_number, n.invoice_id FROM {SCHEMA}.invoice_numbers n "  # noqa: S608
    "JOIN unnest(:accounts, :numbers) AS k(account_id, invoice_number) "
    "ON n.account_id = k.account_id AND n.invoice_number = k.invoice_number"
).bindparams(bindparam("accounts", type_=_TEXTS), bindparam("numbers", type_=_TEXTS))

_BY_NUMBER = text(
    f"SELECT invoice_number, account_id FROM {SCHEMA}.invoice_numbers "  # noqa: S608
    "WHERE invoice_number = ANY(:numbers)"
).bindparams(bindparam("numbers", type_=_TEXTS))


class Received(Protocol):
    """What the idempotency record keeps of an event."""

    @property
    def source(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def digest(self) -> str: ...


class EventRepository:
    async def record_all_new(
        self, session: AsyncSession, rows: Sequence[Received], claims: list[tuple[str, str, str]]
    ) -> bool:
        """Record every (source, id) key of ``rows`` and every claim, if none of them exists yet.

        COPY in a savepoint: True if all went in. On a unique violation (a key received
        before, a number taken, here or by a concurrent transaction that committed) the savepoint is
        rolled back, nothing of either is written, and the caller sorts the batch out with
        :meth:`record_received` and :meth:`claim_invoice_numbers`, which tell the new from the old.
        """
        if not rows:
            return not claims
        try:
            async with session.begin_nested():
                await copy_rows(
                    session,
                    "received_events",
                    SCHEMA,
                    _RECEIVED_COLUMNS,
                    [(r.source, r.id, r.type, r.account_id, r.digest) for r in rows],
                )
                if claims:
                    await copy_rows(session, "invoice_numbers", SCHEMA, _CLAIM_COLUMNS, claims)
        except IntegrityError:
            return False
        return True

    async def record_received(self, session: AsyncSession, rows: Sequence[Received]) -> set[tuple[str, str]]:
        """Insert (source, id) keys; return the ones that were new."""
        if not rows:
            return set()
        result = await session.execute(
            _RECORD,
            {
                "sources": [r.source for r in rows],
                "ids": [r.id for r in rows],
                "types": [r.type for r in rows],
                "accounts": [r.account_id for r in rows],
                "digests": [r.digest for r in rows],
            },
        )
        return {(source, event_id) for source, event_id in result}

    async def digests(self, session: AsyncSession, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The content digest recorded for each of ``keys`` already received."""
        if not keys:
            return {}
        rows = await session.execute(_DIGESTS, {"sources": [k[0] for k in keys], "ids": [k[1] for k in keys]})
        return {(r.source, r.event_id): r.digest for r in rows}

    async def accounts_for_invoice_numbers(self, session: AsyncSession, numbers: list[str]) -> dict[str, set[str]]:
        """For each invoice number among ``numbers``, the accounts that have an invoice with it."""
        if not numbers:
            return {}
        out: dict[str, set[str]] = {}
        for r in await session.execute(_BY_NUMBER, {"numbers": numbers}):
            out.setdefault(r.invoice_number, set()).add(r.account_id)
        return out

    async def forget_received(self, session: AsyncSession, keys: Iterable[tuple[str, str]]) -> None:
        keys = list(keys)
        if keys:
            await session.execute(_FORGET, {"sources": [k[0] for k in keys], "ids": [k[1] for k in keys]})

    async def claim_invoice_numbers(
        self, session: AsyncSession, claims: list[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], str]:
        """Claim (account_id, invoice_number) for invoice_id; return the claims refused, with the owning invoice."""
        if not claims:
            return {}
        accounts = [a for a, _, _ in claims]
        numbers = [n for _, n, _ in claims]
        result = await session.execute(
            _CLAIM, {"accounts": accounts, "numbers": numbers, "invoices": [i for _, _, i in claims]}
        )
        claimed = {(a, n, i) for a, n, i in result}
        # Only the claims not inserted now (the number was taken before, or twice in this batch) need their owner.
        others = [c for c in claims if c not in claimed]
        if not others:
            return {}
        owners = await session.execute(
            _OWNERS, {"accounts": [a for a, _, _ in others], "numbers": [n for _, n, _ in others]}
        )
        owner = {(r.account_id, r.invoice_number): r.invoice_id for r in owners}
        return {(a, n, i): owner[(a, n)] for a, n, i in others if owner.get((a, n), i) != i}
