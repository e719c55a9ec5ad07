"""The only place scoring's ledger tables are queried."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import Text, any_, bindparam, delete, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_scoring.ledger.compute import Documents
from arrears_scoring.ledger.documents import DocRow, Row, from_rows, wins
from arrears_scoring.models import account_balances, accounts, dirty_accounts, documents, open_items
from arrears_shared.events.v1 import AccountUpdated, Customer


@dataclass(frozen=True)
class OpenItem:
    invoice_id: str
    currency: str
    open_minor: int
    due_date: date
    static_logit: float


@dataclass(frozen=True)
class SavedState:
    update: AccountUpdated
    items: list[OpenItem]
    base_logit: float | None
    payload: str  # update.model_dump_json(exclude_none=True): serialized once, for the row and the event


def _docs_of(param: str) -> str:
    """The documents of one JSON array of rows ``[account, kind, doc, ref, data, at, event]``, in the
    order given (fixed names; every value is bound). One JSON parameter instead of an array per
    column: the driver encodes one string, not every element of seven arrays."""
    return (
        "SELECT e->>0, e->>1, e->>2, e->>3, e->4, CAST(e->>5 AS timestamptz), e->>6 "  # noqa: S608
        f"FROM jsonb_array_elements(CAST(:{param} AS jsonb)) WITH ORDINALITY AS u(e, n) ORDER BY n"
    )


_DOC_COLUMNS = "(account_id, kind, doc_id, ref_id, data, at, event_id)"
# First-wins and newest-wins documents never share a key (the kind decides), so the two inserts of
# one statement cannot meet; the dirty marks go in account order (no lock-order deadlocks).
_STORE_MANY = text(
    f"WITH first_wins AS (INSERT INTO {documents.fullname} {_DOC_COLUMNS} {_docs_of('first')} "
    "ON CONFLICT DO NOTHING), "
    f"newest_wins AS (INSERT INTO {documents.fullname} AS old {_DOC_COLUMNS} {_docs_of('newest')} "
    "ON CONFLICT (account_id, kind, doc_id) DO UPDATE SET data = EXCLUDED.data, at = EXCLUDED.at, "
    "event_id = EXCLUDED.event_id "
    "WHERE (old.at, coalesce(old.event_id, '')) <= (EXCLUDED.at, EXCLUDED.event_id)) "
    f"INSERT INTO {dirty_accounts.fullname} (account_id, since) "
    "SELECT unnest(CAST(:accounts AS text[])), CAST(:since AS timestamptz) ON CONFLICT DO NOTHING"
)


def _any(ids: Sequence[str]) -> Any:
    """``= ANY(:ids)`` with the ids as one array parameter: the statement's text is the same however
    many ids (an IN list is a new statement, compiled, prepared and planned, per length)."""
    return any_(bindparam("ids", list(ids), type_=ARRAY(Text)))


# The states, open items and balances go as JSON arrays of rows (one string each for the driver to
# send, instead of an array per column whose every element it checks and encodes); each state is
# the published payload's JSON, embedded as it is.
_SAVE_STATES = text(
    f"WITH old_items AS (DELETE FROM {open_items.fullname} WHERE account_id = ANY(CAST(:ids AS text[]))), "  # noqa: S608
    f"old_balances AS (DELETE FROM {account_balances.fullname} WHERE account_id = ANY(CAST(:ids AS text[]))) "
    f"INSERT INTO {accounts.fullname} (account_id, version, state, updated_at, tier, probability, "
    "max_days_past_due, oldest_due_date, aged_on, base_logit) "
    "SELECT e->>0, CAST(e->>1 AS int), e->2, CAST(:at AS timestamptz), e->>3, CAST(e->>4 AS float8), "
    "CAST(e->>5 AS int), CAST(e->>6 AS date), CAST(:aged_on AS date), CAST(e->>7 AS float8) "
    "FROM jsonb_array_elements(CAST(:states AS jsonb)) AS u(e) "
    "ON CONFLICT (account_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state, "
    "updated_at = EXCLUDED.updated_at, tier = EXCLUDED.tier, probability = EXCLUDED.probability, "
    "max_days_past_due = EXCLUDED.max_days_past_due, oldest_due_date = EXCLUDED.oldest_due_date, "
    "aged_on = EXCLUDED.aged_on, base_logit = EXCLUDED.base_logit"
)
# Runs after _SAVE_STATES (a statement does not see its own CTEs' deletes, so the inserts of
# rows with the deleted keys must come in the next one).
_SAVE_ROWS = text(
    f"WITH new_items AS (INSERT INTO {open_items.fullname} "  # noqa: S608
    "(account_id, invoice_id, currency, open_minor, due_date, static_logit) "
    "SELECT e->>0, e->>1, e->>2, CAST(e->>3 AS bigint), CAST(e->>4 AS date), CAST(e->>5 AS float8) "
    "FROM jsonb_array_elements(CAST(:items AS jsonb)) AS u(e)) "
    f"INSERT INTO {account_balances.fullname} (account_id, currency, open_minor, overdue_minor, credit_minor) "
    "SELECT e->>0, e->>1, CAST(e->>2 AS bigint), CAST(e->>3 AS bigint), CAST(e->>4 AS bigint) "
    "FROM jsonb_array_elements(CAST(:balances AS jsonb)) AS u(e)"
)
# ``data`` as its JSON text: the documents are validated straight from it (documents.from_rows).
_LOAD_WITH_VERSIONS = text(
    f"SELECT account_id, kind, doc_id, ref_id, CAST(data AS text), at, NULL::int FROM {documents.fullname} "  # noqa: S608
    "WHERE account_id = ANY(CAST(:ids AS text[])) "
    f"UNION ALL SELECT account_id, NULL, NULL, NULL, NULL, NULL, version FROM {accounts.fullname} "
    "WHERE account_id = ANY(CAST(:ids AS text[]))"
)


COLUMNS = (documents.c.kind, documents.c.doc_id, documents.c.ref_id, documents.c.data, documents.c.at)


class LedgerRepository:
    async def lock_account(self, session: AsyncSession, account_id: str) -> None:
        """Serialize changes to one account (its version must increase by exactly one per change)."""
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('scoring:' || :a))"), {"a": account_id})

    async def store(
        self, session: AsyncSession, account_id: str, rows: Sequence[DocRow], event_id: str, at: datetime
    ) -> None:
        """Store an event's documents and mark the account changed, in one statement (one round
        trip per event); a redelivered or older copy changes nothing (see documents.wins)."""
        final = pg_insert(dirty_accounts).values(account_id=account_id, since=at).on_conflict_do_nothing()
        for n, row in enumerate(rows):
            final = final.add_cte(self._put_stmt(account_id, row, event_id).cte(f"doc{n}"))
        await session.execute(final)

    async def store_many(
        self, session: AsyncSession, entries: Sequence[tuple[str, Sequence[DocRow], str]], at: datetime
    ) -> None:
        """Store the documents of many events, given in order as (account id, rows, event id), and
        mark their accounts changed, in one statement whatever the number (arrays unnested, so its
        text and plan are the same each time). The outcome is that of :meth:`store` event by event:
        first-wins documents keep the first copy (inserted in order), and of the newest-wins copies
        of one key only the winner is sent, as one statement may not update a row twice."""
        if not entries:
            return
        first: list[tuple[str, DocRow, str]] = []
        newest: dict[tuple[str, str, str], tuple[str, DocRow, str]] = {}
        for account_id, rows, event_id in entries:
            for row in rows:
                if not row.newest_wins:
                    first.append((account_id, row, event_id))
                    continue
                key = (account_id, row.kind, row.doc_id)
                held = newest.get(key)
                if held is None or wins(row, event_id, held[1], held[2]):
                    newest[key] = (account_id, row, event_id)
        params: dict[str, Any] = {"accounts": sorted({account_id for account_id, _, _ in entries}), "since": at}
        for param, docs in (("first", first), ("newest", list(newest.values()))):
            params[param] = orjson.dumps(
                [(a, row.kind, row.doc_id, row.ref_id, row.data, row.at, event_id) for a, row, event_id in docs]
            ).decode()
        await session.execute(_STORE_MANY, params)

    async def put(self, session: AsyncSession, account_id: str, row: DocRow, event_id: str) -> None:
        """Store one document; a redelivered or older copy changes nothing (see documents.wins)."""
        await session.execute(self._put_stmt(account_id, row, event_id))

    @staticmethod
    def _put_stmt(account_id: str, row: DocRow, event_id: str) -> Any:
        stmt = pg_insert(documents).values(
            account_id=account_id,
            kind=row.kind,
            doc_id=row.doc_id,
            ref_id=row.ref_id,
            data=row.data,
            at=row.at,
            event_id=event_id,
        )
        if row.newest_wins:
            stmt = stmt.on_conflict_do_update(
                index_elements=[documents.c.account_id, documents.c.kind, documents.c.doc_id],
                set_={"data": stmt.excluded.data, "at": stmt.excluded.at, "event_id": stmt.excluded.event_id},
                where=tuple_(documents.c.at, func.coalesce(documents.c.event_id, ""))
                <= tuple_(stmt.excluded.at, stmt.excluded.event_id),
            )
        else:
            stmt = stmt.on_conflict_do_nothing()
        return stmt

    async def load(self, session: AsyncSession, account_id: str) -> tuple[Customer | None, Documents]:
        rows = await session.execute(
            select(documents.c.kind, documents.c.doc_id, documents.c.ref_id, documents.c.data, documents.c.at).where(
                documents.c.account_id == account_id
            )
        )
        return from_rows(tuple(r) for r in rows)

    async def all_accounts(self, session: AsyncSession) -> AsyncIterator[tuple[str, Customer | None, Documents]]:
        """Every account's documents, streamed in account order (for training)."""
        result = await session.stream(
            select(
                documents.c.account_id,
                documents.c.kind,
                documents.c.doc_id,
                documents.c.ref_id,
                documents.c.data,
                documents.c.at,
            ).order_by(documents.c.account_id)
        )
        current: str | None = None
        rows: list[Row] = []
        async for account_id, kind, doc_id, ref_id, data, at in result:
            if account_id != current and current is not None:
                yield (current, *from_rows(rows))
                rows = []
            current = account_id
            rows.append((kind, doc_id, ref_id, data, at))
        if current is not None:
            yield (current, *from_rows(rows))

    async def mark_dirty(self, session: AsyncSession, account_id: str, at: datetime) -> None:
        stmt = pg_insert(dirty_accounts).values(account_id=account_id, since=at)
        await session.execute(stmt.on_conflict_do_nothing())

    async def take_dirty(self, session: AsyncSession, limit: int) -> list[str]:
        """Up to ``limit`` changed accounts, oldest first, locked for this transaction (other
        publishers skip them) and removed from the set when it commits."""
        rows = await session.scalars(
            select(dirty_accounts.c.account_id)
            .order_by(dirty_accounts.c.since)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list(rows)
        if ids:
            await session.execute(delete(dirty_accounts).where(dirty_accounts.c.account_id == _any(ids)))
        return ids

    async def current_version(self, session: AsyncSession, account_id: str) -> int:
        version = await session.scalar(select(accounts.c.version).where(accounts.c.account_id == account_id))
        return int(version or 0)

    async def save_states(self, session: AsyncSession, saved: list[SavedState], at: datetime, aged_on: date) -> None:
        """Many accounts' states and summaries in two statements whatever their number (rows sent
        as JSON arrays, so the text and plan are the same each time and nothing is compiled per
        row): the states upserted and the old open items and balances deleted, then the new open
        items and balances inserted. Every number goes as JSON's shortest exact form, so floats
        arrive bit for bit."""
        if not saved:
            return
        states = [
            (
                s.update.account_id,
                s.update.version,
                orjson.Fragment(s.payload),
                s.update.risk.tier,
                s.update.risk.probability,
                s.update.max_days_past_due,
                s.update.oldest_due_date,
                s.base_logit,
            )
            for s in saved
        ]
        ids = [s.update.account_id for s in saved]
        params = {"ids": ids, "states": orjson.dumps(states).decode(), "at": at, "aged_on": aged_on}
        await session.execute(_SAVE_STATES, params)
        items = [
            (s.update.account_id, i.invoice_id, i.currency, i.open_minor, i.due_date, i.static_logit)
            for s in saved
            for i in s.items
        ]
        balances = [
            (s.update.account_id, b.currency, b.open_minor, b.overdue_minor, b.credit_minor)
            for s in saved
            for b in s.update.balances
        ]
        await session.execute(
            _SAVE_ROWS, {"items": orjson.dumps(items).decode(), "balances": orjson.dumps(balances).decode()}
        )

    async def load_with_versions(
        self, session: AsyncSession, account_ids: Sequence[str]
    ) -> tuple[dict[str, tuple[Customer | None, Documents]], dict[str, int]]:
        """:meth:`load_many` and :meth:`versions` in one round trip: every document of the accounts
        and, on one extra row per published account (kind NULL), its current version."""
        rows = await session.execute(_LOAD_WITH_VERSIONS, {"ids": list(account_ids)})
        grouped: dict[str, list[Row]] = {a: [] for a in account_ids}
        versions: dict[str, int] = {}
        for account_id, kind, doc_id, ref_id, data, at, version in rows:
            if kind is None:
                versions[account_id] = int(version)
            else:
                grouped[account_id].append((kind, doc_id, ref_id, data, at))
        return {a: from_rows(r) for a, r in grouped.items()}, versions

    async def load_many(
        self, session: AsyncSession, account_ids: Sequence[str]
    ) -> dict[str, tuple[Customer | None, Documents]]:
        rows = await session.execute(
            select(documents.c.account_id, *COLUMNS).where(documents.c.account_id == _any(account_ids))
        )
        grouped: dict[str, list[Row]] = {a: [] for a in account_ids}
        for account_id, *rest in rows:
            grouped[account_id].append(tuple(rest))
        return {a: from_rows(r) for a, r in grouped.items()}

    async def versions(self, session: AsyncSession, account_ids: Sequence[str]) -> dict[str, int]:
        rows = await session.execute(
            select(accounts.c.account_id, accounts.c.version).where(accounts.c.account_id == _any(account_ids))
        )
        return {a: int(v) for a, v in rows}

    async def lock_accounts(self, session: AsyncSession, account_ids: Sequence[str]) -> None:
        """Lock many accounts at once, in a fixed order so two lockers never deadlock."""
        await session.execute(
            text(
                "SELECT pg_advisory_xact_lock(hashtext('scoring:' || a)) FROM unnest(CAST(:ids AS text[])) a ORDER BY a"
            ),
            {"ids": sorted(account_ids)},
        )

    async def get_state(self, session: AsyncSession, account_id: str) -> dict[str, Any] | None:
        state = await session.scalar(select(accounts.c.state).where(accounts.c.account_id == account_id))
        return dict(state) if state is not None else None

    async def count_accounts(self, session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(accounts)) or 0)

    async def accounts_to_reage(
        self,
        session: AsyncSession,
        today: date,
        level_offsets: list[int],
        dpd: tuple[float, float, float],
        thresholds: tuple[float, float, float],
    ) -> list[str]:
        """The accounts whose published aging no longer holds on ``today``: an open invoice moved
        bucket, the oldest open invoice crossed an escalation-level day, or the risk tier moved.
        One set-based statement over open_items; nothing is loaded per account."""
        coef, center, cap = dpd
        rows = await session.execute(
            text(REAGE_SQL),
            {
                "today": today,
                "offsets": level_offsets,
                "coef": coef,
                "center": center,
                "cap": cap,
                "t_medium": thresholds[0],
                "t_high": thresholds[1],
                "t_critical": thresholds[2],
            },
        )
        return [r[0] for r in rows]


REAGE_SQL = """
WITH item AS (
    SELECT o.account_id,
           (CAST(:today AS date) - o.due_date) AS dpd_new,
           (a.aged_on - o.due_date) AS dpd_old,
           o.static_logit
    FROM scoring.open_items o
    JOIN scoring.accounts a ON a.account_id = o.account_id
    WHERE a.aged_on < CAST(:today AS date)
), agg AS (
    SELECT account_id,
           bool_or(
               width_bucket(dpd_new, ARRAY[1, 31, 61, 91]) <> width_bucket(dpd_old, ARRAY[1, 31, 61, 91])
           ) AS bucket_moved,
           max(dpd_new) AS oldest_new,
           max(dpd_old) AS oldest_old,
           avg(1.0 / (1.0 + exp(-(static_logit
               + CAST(:coef AS float8)
                 * (least(greatest(dpd_new, 0), CAST(:cap AS float8)) - CAST(:center AS float8))))))
               AS p_new
    FROM item
    GROUP BY account_id
)
SELECT agg.account_id
FROM agg
JOIN scoring.accounts a ON a.account_id = agg.account_id
WHERE agg.bucket_moved
   OR EXISTS (
        SELECT 1 FROM unnest(CAST(:offsets AS int[])) AS lvl(day)
        WHERE agg.oldest_old < lvl.day AND lvl.day <= agg.oldest_new
   )
   OR a.tier IS DISTINCT FROM (
        CASE WHEN agg.p_new >= CAST(:t_critical AS float8) THEN 'critical'
             WHEN agg.p_new >= CAST(:t_high AS float8) THEN 'high'
             WHEN agg.p_new >= CAST(:t_medium AS float8) THEN 'medium'
             ELSE 'low' END)
ORDER BY agg.account_id
"""


async def list_states(
    session: AsyncSession,
    *,
    tiers: Sequence[str] | None,
    currency: str | None,
    min_overdue_minor: int | None,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Account states in account-id order, filtered; ``after`` is the last id of the previous page."""
    query = select(accounts.c.state).order_by(accounts.c.account_id).limit(limit)
    if tiers:
        query = query.where(accounts.c.tier.in_(tiers))
    if after is not None:
        query = query.where(accounts.c.account_id > after)
    if currency is not None:
        match = (account_balances.c.account_id == accounts.c.account_id) & (account_balances.c.currency == currency)
        if min_overdue_minor is not None:
            match = match & (account_balances.c.overdue_minor >= min_overdue_minor)
        query = query.where(select(account_balances.c.account_id).where(match).exists())
    return [dict(r) for r in (await session.scalars(query))]
