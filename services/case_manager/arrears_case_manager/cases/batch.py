"""Set-based evaluation: a whole consumer batch or sweep batch decided with a handful of statements.

:class:`CaseService.evaluate` is the one place that decides what happens to an account's case. To
apply many accounts at once without forking that logic, it runs against a :class:`BatchRepository`
and a :class:`BufferedOutbox`: the rows it reads (open cases, the latest closed case, pending
promises, active plans) are loaded for all accounts of the batch in a few statements up front, its
writes are kept in memory (each read after a write sees it, as it would in the database) and
written at the end in bulk: one insert of new cases, one executemany of case updates, one insert of
timeline rows, one insert of outbox rows, one upsert of account states and one update of timers.
The rare writes to promises and payment plans go to the database at once (and to the loaded rows).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    Result,
    SmallInteger,
    Table,
    Text,
    TextClause,
    any_,
    bindparam,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.cases.repository import CaseRepository, _ids
from arrears_case_manager.cases.state import CLOSED
from arrears_case_manager.models import accounts, cases, payment_plans, promises, timeline
from arrears_shared.events.envelope import CloudEvent
from arrears_shared.messaging.outbox import Outbox

# The columns an evaluation may change on an existing case (everything else is the API's).
_EVALUATED = (
    "status",
    "stage",
    "closed_at",
    "closed_reason",
    "next_action_at",
    "paused_until",
    "credit_hold",
    "tier",
    "currency",
    "overdue_minor",
    "priority",
    "version",
)
# What the database fills in when a case is inserted without them (models.cases' server defaults).
_CASE_DEFAULTS: dict[str, Any] = {
    "stage": None,
    "closed_at": None,
    "next_action_at": None,
    "assignee": None,
    "credit_hold": "none",
    "version": 1,
    "tier": None,
    "currency": None,
    "overdue_minor": 0,
    "opened_overdue_minor": 0,
    "priority": 0,
    "closed_reason": None,
    "paused_until": None,
}

_UPSERT_ACCOUNT = (
    "ON CONFLICT (account_id) DO UPDATE SET version = excluded.version, state = excluded.state, "
    "updated_at = excluded.updated_at, wake_at = excluded.wake_at"
)
_LOCK_IN_ORDER = text(
    "SELECT pg_advisory_xact_lock(h) FROM "
    "(SELECT hashtext('cases:' || a) AS h FROM unnest(CAST(:ids AS text[])) AS a ORDER BY 1) AS s"
)
_TRY_LOCK = text(
    "SELECT a FROM (SELECT a FROM unnest(CAST(:ids AS text[])) AS a ORDER BY hashtext('cases:' || a)) AS s "
    "WHERE pg_try_advisory_xact_lock(hashtext('cases:' || a))"
)
# The statuses in which a case can have a promise pending or a plan active (any other status ended them).
_WITH_AGREEMENTS = frozenset({"promised", "payment_plan"})
_CLOSED_SQL = ", ".join(f"'{s}'" for s in sorted(CLOSED))
# The batch's open cases, row-locked in case id order, and the latest (closed) case of each account
# without one (a written-off debt does not reopen): one statement, one snapshot, taken after the
# accounts' advisory locks (nobody else opens or closes their cases meanwhile).
_LOAD_CASES = text(
    "WITH o AS (SELECT * FROM case_manager.cases WHERE account_id = ANY(CAST(:ids AS text[])) "  # noqa: S608
    f"AND status NOT IN ({_CLOSED_SQL}) ORDER BY case_id FOR UPDATE) "
    "SELECT true AS is_open, o.* FROM o "
    "UNION ALL "
    "SELECT false AS is_open, l.* FROM (SELECT DISTINCT ON (c.account_id) c.* FROM case_manager.cases AS c "
    f"WHERE c.account_id = ANY(CAST(:ids AS text[])) AND c.status IN ({_CLOSED_SQL}) "
    "AND NOT EXISTS (SELECT 1 FROM o WHERE o.account_id = c.account_id) "
    "ORDER BY c.account_id, c.opened_at DESC) AS l"
).bindparams(bindparam("ids", type_=ARRAY(Text)))
_SET_WAKES = text(
    "UPDATE case_manager.accounts AS t SET wake_at = v.w "
    "FROM unnest(CAST(:ids AS text[]), CAST(:wakes AS timestamptz[])) AS v(id, w) WHERE t.account_id = v.id"
).bindparams(bindparam("ids", type_=ARRAY(Text)), bindparam("wakes", type_=ARRAY(DateTime(timezone=True))))


def _array_of(column: Column[Any]) -> tuple[str, str]:
    """The PostgreSQL array element type a column's values are sent as, and the cast back (JSONB goes as text)."""
    kind = column.type
    if isinstance(kind, JSONB):
        return "text", "::jsonb"
    if isinstance(kind, DateTime):
        return "timestamptz", ""
    if isinstance(kind, BigInteger):
        return "int8", ""
    if isinstance(kind, SmallInteger):
        return "int2", ""
    if isinstance(kind, Integer):
        return "int4", ""
    if isinstance(kind, LargeBinary):
        return "bytea", ""
    if isinstance(kind, Date):
        return "date", ""
    return "text", ""


@functools.cache
def _unnest_insert(table: Table, columns: tuple[str, ...], then: str = "") -> TextClause:
    types = [_array_of(table.c[c]) for c in columns]
    names = ", ".join(columns)
    arrays = ", ".join(f"CAST(:{c} AS {t}[])" for c, (t, _) in zip(columns, types, strict=True))
    values = ", ".join(f"v.{c}{cast}" for c, (_, cast) in zip(columns, types, strict=True))
    return text(
        f'INSERT INTO "{table.schema}"."{table.name}" ({names}) '  # noqa: S608  (names from code, not input)
        f"SELECT {values} FROM unnest({arrays}) AS v({names}) {then}"
    )


@functools.cache
def _unnest_update(table: Table, key: str, columns: tuple[str, ...]) -> TextClause:
    every = (key, *columns)
    types = [_array_of(table.c[c]) for c in every]
    names = ", ".join(every)
    arrays = ", ".join(f"CAST(:{c} AS {t}[])" for c, (t, _) in zip(every, types, strict=True))
    sets = ", ".join(f"{c} = v.{c}{cast}" for c, (_, cast) in zip(columns, types[1:], strict=True))
    return text(
        f'UPDATE "{table.schema}"."{table.name}" AS t SET {sets} '  # noqa: S608  (names from code, not input)
        f"FROM unnest({arrays}) AS v({names}) WHERE t.{key} = v.{key}"
    )


class JsonText(str):
    """A value already serialized as JSON (a JSONB column's value is sent as is, not serialized again)."""

    __slots__ = ()


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, JsonText) else orjson.dumps(value).decode()


def _columns(table: Table, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """``rows`` as one array per column (JSONB values serialized, to be cast back in the statement)."""
    out: dict[str, list[Any]] = {}
    for c in columns:
        values = [row[c] for row in rows]
        if isinstance(table.c[c].type, JSONB):
            values = [_json(v) for v in values]
        out[c] = values
    return out


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]], then: str = "") -> None:
    """Insert ``rows`` (all with the same keys) in one statement of one shape whatever their number:
    one array per column, unnested (no per-row parameters to build, and one plan for every batch).
    ``then``: a constant ON CONFLICT clause, if any."""
    if rows:
        columns = tuple(rows[0])
        await session.execute(_unnest_insert(table, columns, then), _columns(table, columns, rows))


async def update_rows(session: AsyncSession, table: Table, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Update each row identified by ``key`` to the values in ``rows`` (all with the same keys), in one statement."""
    if rows:
        columns = tuple(c for c in rows[0] if c != key)
        await session.execute(_unnest_update(table, key, columns), _columns(table, (key, *columns), rows))


async def lock_accounts(session: AsyncSession, account_ids: Iterable[str]) -> None:
    """Take the accounts' advisory locks (the ones :meth:`CaseRepository.lock_account` takes), all in
    one statement and in one order, so that two batches sharing accounts never wait on each other in a cycle."""
    ids = sorted(set(account_ids))
    if ids:
        await session.execute(_LOCK_IN_ORDER.bindparams(bindparam("ids", type_=ARRAY(Text))), {"ids": ids})


async def try_lock_accounts(session: AsyncSession, account_ids: Iterable[str]) -> set[str]:
    """Take the advisory locks of those accounts nobody else holds; the accounts locked.

    The sweeper uses this: it already holds the accounts' rows (FOR UPDATE SKIP LOCKED), so waiting
    for an account lock held by a consumer that waits for that row would deadlock. An account skipped
    here is still due and is taken by a later sweep."""
    ids = sorted(set(account_ids))
    if not ids:
        return set()
    rows = await session.execute(_TRY_LOCK.bindparams(bindparam("ids", type_=ARRAY(Text))), {"ids": ids})
    return set(rows.scalars())


def _row(mapping: Mapping[Any, Any]) -> SimpleNamespace:
    return SimpleNamespace(**mapping)


def _rows(result: Result[Any]) -> Iterator[SimpleNamespace]:
    """Each row of ``result`` as a namespace, its column names read once (a row's ``_mapping`` would
    build a mapping and walk the result's keys again for every row)."""
    keys = list(result.keys())
    for r in result:
        yield SimpleNamespace(**dict(zip(keys, r, strict=True)))


def _mutable(row: Any) -> SimpleNamespace | None:
    """A row read one at a time, as the namespace the batch's loaded rows are."""
    return None if row is None else SimpleNamespace(**row._mapping)


def _copy(row: SimpleNamespace | None) -> Any:
    """A snapshot, as a database read returns: later writes do not change what the caller holds."""
    return None if row is None else SimpleNamespace(**vars(row))


class BufferedOutbox(Outbox):
    """Keeps the rows :meth:`Outbox.add` would insert, in order, and inserts them in one statement
    (:meth:`Outbox.add_payloads`, with the trace of the batch's work)."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__(outbox.table)
        self.rows: list[tuple[str, str | None, bytes]] = []

    async def add(
        self,
        session: AsyncSession,
        topic: str,
        event: CloudEvent,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if headers:  # a row with headers of its own goes in alone, after the ones before it
            await self.flush(session)
            await super().add(session, topic, event, key=key, headers=headers)
            return
        self.rows.append((topic, key if key is not None else event.subject, event.to_json()))

    async def flush(self, session: AsyncSession) -> None:
        await self.add_payloads(session, self.rows)
        self.rows = []


class BatchRepository(CaseRepository):
    """Serves :meth:`CaseService.evaluate` for the accounts loaded by :meth:`load` from memory and keeps
    its writes until :meth:`flush`. Only for accounts whose advisory locks the caller holds."""

    def __init__(self, base: CaseRepository) -> None:
        self.base = base
        self._cases: dict[str, SimpleNamespace] = {}
        self._open: dict[str, str] = {}  # account -> its open case
        self._latest: dict[str, SimpleNamespace | None] = {}  # account -> its latest case
        self._promises: dict[str, SimpleNamespace | None] = {}  # case -> its pending promise
        self._plans: dict[str, SimpleNamespace | None] = {}  # case -> its active plan
        self._new: dict[str, None] = {}  # cases created in this batch, in order
        self._dirty: dict[str, None] = {}  # loaded cases changed in this batch
        self._changed: set[str] = {"version"}  # the columns set on any of them (each update bumps the version)
        self._timeline: list[dict[str, Any]] = []
        self._fees: dict[str, set[tuple[str, str]]] = {}
        self._states: dict[str, dict[str, Any]] = {}
        self.stored: set[str] = set()  # accounts known to have a row (their states are updated, not upserted)
        self._wakes: dict[str, datetime | None] = {}

    async def load(self, session: AsyncSession, account_ids: Sequence[str], settling: Iterable[str] = ()) -> None:
        """Read what evaluating these accounts needs: their open cases (row-locked, in case id order) and
        the latest case of those without one, in one statement; then the pending promises and active
        plans of the open cases that can have one: those promised or on a plan (a promise or plan in
        force ends when its case moves to any other status, cases/actions.py) and those of the
        ``settling`` accounts (paid in full: whatever is in force is settled). Without such a case
        (the usual batch) no promise or plan is read; should evaluating ask for one that was not
        loaded, it is read then (:meth:`pending_promise`, :meth:`active_plan`)."""
        ids = sorted(set(account_ids))
        for row in _rows(await session.execute(_LOAD_CASES, {"ids": ids})):
            is_open = row.__dict__.pop("is_open")
            self._cases[row.case_id] = row
            self._latest[row.account_id] = row
            if is_open:
                self._open[row.account_id] = row.case_id
        for a in ids:
            self._latest.setdefault(a, None)
        settle = set(settling)
        case_ids = [c for a, c in self._open.items() if self._cases[c].status in _WITH_AGREEMENTS or a in settle]
        for c in case_ids:
            self._promises[c] = None
            self._plans[c] = None
        if case_ids:
            for row in _rows(
                await session.execute(
                    select(promises).where(promises.c.case_id == any_(_ids(case_ids)), promises.c.status == "pending")
                )
            ):
                self._promises[row.case_id] = row
            for row in _rows(
                await session.execute(
                    select(payment_plans).where(
                        payment_plans.c.case_id == any_(_ids(case_ids)), payment_plans.c.status == "active"
                    )
                )
            ):
                self._plans[row.case_id] = row

    # ------------------------------------------------------------------ reads, from memory

    async def lock_account(self, session: AsyncSession, account_id: str) -> None:
        if account_id not in self._latest:
            raise RuntimeError("account not loaded into this batch")  # its lock was never taken

    async def open_case(self, session: AsyncSession, account_id: str) -> Any:
        case_id = self._open.get(account_id)
        row = self._cases.get(case_id) if case_id is not None else None
        if row is None or row.status in CLOSED:
            return None
        return _copy(row)

    async def latest_case_for_account(self, session: AsyncSession, account_id: str) -> Any:
        return _copy(self._latest.get(account_id))

    async def get_case(self, session: AsyncSession, case_id: str) -> Any:
        if case_id in self._cases:
            return _copy(self._cases[case_id])
        return await self.base.get_case(session, case_id)

    async def pending_promise(self, session: AsyncSession, case_id: str) -> Any:
        if case_id not in self._promises:  # not loaded (see load): read now, kept for the batch's later reads
            self._promises[case_id] = (
                None if case_id in self._new else _mutable(await self.base.pending_promise(session, case_id))
            )
        return _copy(self._promises[case_id])

    async def active_plan(self, session: AsyncSession, case_id: str) -> Any:
        if case_id not in self._plans:
            self._plans[case_id] = (
                None if case_id in self._new else _mutable(await self.base.active_plan(session, case_id))
            )
        return _copy(self._plans[case_id])

    async def fees_assessed(self, session: AsyncSession, case_id: str) -> set[tuple[str, str]]:
        stored = set() if case_id in self._new else await self.base.fees_assessed(session, case_id)
        return stored | self._fees.get(case_id, set())

    # ------------------------------------------------------------------ writes, kept until flush

    async def save_account(
        self, session: AsyncSession, account_id: str, version: int, state: dict[str, Any] | JsonText, now: datetime
    ) -> None:
        self._states[account_id] = {"account_id": account_id, "version": version, "state": state, "updated_at": now}

    async def set_wake(self, session: AsyncSession, account_id: str, wake_at: datetime | None) -> None:
        self._wakes[account_id] = wake_at

    async def create_case(self, session: AsyncSession, values: dict[str, Any]) -> None:
        row = _row({**_CASE_DEFAULTS, **values})
        self._cases[row.case_id] = row
        self._new[row.case_id] = None
        self._open[row.account_id] = row.case_id
        self._latest[row.account_id] = row

    async def update_case(
        self, session: AsyncSession, case_id: str, *, changes_only: bool = False, **values: Any
    ) -> None:
        row = self._cases[case_id]
        if changes_only and values and all(getattr(row, name) == value for name, value in values.items()):
            return  # as CaseRepository.update_case: nothing differs, nothing written, the version kept
        for name, value in values.items():
            setattr(row, name, value)
        row.version += 1
        if case_id not in self._new:
            self._dirty[case_id] = None
            self._changed.update(values)

    async def add_timeline(
        self, session: AsyncSession, case_id: str, at: datetime, kind: str, actor: str, data: dict[str, Any]
    ) -> None:
        self._timeline.append({"case_id": case_id, "at": at, "kind": kind, "actor": actor, "data": data})
        if kind == "late_fee_assessed":
            self._fees.setdefault(case_id, set()).add((str(data["invoice_id"]), str(data["kind"])))

    # Promises and plans change rarely (a kept or broken promise, an installment): written at once.

    async def settle_promise(self, session: AsyncSession, promise_id: str, status: str, at: datetime) -> None:
        await self.base.settle_promise(session, promise_id, status, at)
        for case_id, promise in list(self._promises.items()):
            if promise is not None and promise.promise_id == promise_id:
                self._promises[case_id] = None

    async def update_plan(self, session: AsyncSession, plan_id: str, **values: Any) -> None:
        await self.base.update_plan(session, plan_id, **values)
        for case_id, plan in list(self._plans.items()):
            if plan is None or plan.plan_id != plan_id:
                continue
            for name, value in values.items():
                setattr(plan, name, value)
            if plan.status != "active":
                self._plans[case_id] = None

    async def flush(self, session: AsyncSession) -> None:
        """Write everything kept, in an order the constraints accept: changed cases first (a case closed in
        this batch before its account's next one opens), then new cases, then timeline rows."""
        if self._dirty:
            # Only the columns some evaluation set: the others still hold what was loaded (and row-locked).
            names = [n for n in _EVALUATED if n in self._changed]
            await update_rows(
                session,
                cases,
                "case_id",
                [{"case_id": c, **{n: getattr(self._cases[c], n) for n in names}} for c in self._dirty],
            )
        if self._new:
            await insert_rows(session, cases, [vars(self._cases[c]) for c in self._new])
        await insert_rows(session, timeline, self._timeline)
        if self._states:
            saved: list[dict[str, Any]] = []
            added: list[dict[str, Any]] = []
            for account_id, values in self._states.items():
                row = {**values, "wake_at": self._wakes.pop(account_id, None)}
                (saved if account_id in self.stored else added).append(row)
            # A plain update of the rows known to exist (an upsert would first probe for the conflict and
            # lock the row); the others inserted, still as an upsert.
            await update_rows(session, accounts, "account_id", saved)
            await insert_rows(session, accounts, added, _UPSERT_ACCOUNT)
        if self._wakes:
            await session.execute(_SET_WAKES, {"ids": list(self._wakes), "wakes": list(self._wakes.values())})
        self._new.clear()
        self._dirty.clear()
        self._changed = {"version"}
        self._timeline = []
        self._states.clear()
        self._wakes.clear()
