"""The only place the case manager's tables are queried (batch.py holds the set-based reads and writes)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    Row,
    Select,
    Text,
    any_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.cases.state import CLOSED
from arrears_case_manager.models import (
    accounts,
    api_keys,
    cases,
    disputes,
    idempotency_keys,
    invoices_issued,
    payment_plans,
    promises,
    timeline,
)
from arrears_shared.events.v1 import AccountUpdated

# One statement (one round trip) for a whole batch of account states, arrays in: the invoices seen
# open, then each account's receivables per currency when they changed.
_RECORD_RECEIVABLES = text(
    """
    WITH invoices AS (
        INSERT INTO case_manager.invoices_issued AS i (account_id, invoice_id, currency, amount_minor, issue_date)
        SELECT v.account_id, v.invoice_id, v.currency, v.amount_minor, v.issue_date
        FROM unnest(CAST(:inv_acc AS text[]), CAST(:inv_id AS text[]), CAST(:inv_cur AS text[]),
                    CAST(:inv_amount AS bigint[]), CAST(:inv_issued AS date[]))
             AS v(account_id, invoice_id, currency, amount_minor, issue_date)
        LEFT JOIN case_manager.invoices_issued AS known USING (account_id, invoice_id)
        -- Only new or changed invoices reach the insert: ON CONFLICT DO UPDATE locks (and logs) the
        -- conflicting row even when its WHERE then leaves it alone, and most invoices are seen unchanged.
        WHERE known.account_id IS NULL
           OR (known.currency, known.amount_minor, known.issue_date)
              IS DISTINCT FROM (v.currency, v.amount_minor, v.issue_date)
        ON CONFLICT (account_id, invoice_id) DO UPDATE
        SET currency = EXCLUDED.currency, amount_minor = EXCLUDED.amount_minor, issue_date = EXCLUDED.issue_date
        WHERE (i.currency, i.amount_minor, i.issue_date)
              IS DISTINCT FROM (EXCLUDED.currency, EXCLUDED.amount_minor, EXCLUDED.issue_date)
    ), n AS (
        SELECT * FROM unnest(CAST(:acc AS text[]), CAST(:cur AS text[]), CAST(:day AS date[]),
                             CAST(:open AS bigint[]), CAST(:current AS bigint[]))
            AS t(account_id, currency, day, open_minor, current_minor)
    ), a AS (
        SELECT * FROM unnest(CAST(:accounts AS text[]), CAST(:days AS date[])) AS t(account_id, day)
    ), last AS (
        SELECT DISTINCT ON (s.account_id, s.currency) s.account_id, s.currency, s.open_minor, s.current_minor
        FROM case_manager.receivable_snapshots s JOIN a ON a.account_id = s.account_id AND s.day <= a.day
        ORDER BY s.account_id, s.currency, s.day DESC
    ), candidates AS (
        SELECT account_id, currency, day, open_minor, current_minor FROM n
        UNION ALL
        SELECT l.account_id, l.currency, a.day, 0, 0 FROM last l JOIN a USING (account_id)
        WHERE NOT EXISTS (SELECT 1 FROM n WHERE n.account_id = l.account_id AND n.currency = l.currency)
    )
    INSERT INTO case_manager.receivable_snapshots AS s (account_id, currency, day, open_minor, current_minor)
    SELECT c.account_id, c.currency, c.day, c.open_minor, c.current_minor
    FROM candidates c LEFT JOIN last l USING (account_id, currency)
    WHERE l.account_id IS NULL OR l.open_minor <> c.open_minor OR l.current_minor <> c.current_minor
    ON CONFLICT (account_id, currency, day)
    DO UPDATE SET open_minor = EXCLUDED.open_minor, current_minor = EXCLUDED.current_minor
    """
)


def _ids(values: Sequence[str]) -> BindParameter[Any]:
    """``values`` as one text[] parameter, for ``column == any_(...)``: one statement shape (compiled
    once) whatever their number, where ``in_`` renders one parameter per value on every call."""
    ids: Any = list(values)
    return bindparam(None, ids, type_=ARRAY(Text))


class CaseRepository:
    async def lock_account(self, session: AsyncSession, account_id: str) -> None:
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('cases:' || :a))"), {"a": account_id})

    async def account(self, session: AsyncSession, account_id: str) -> Row[Any] | None:
        return (await session.execute(select(accounts).where(accounts.c.account_id == account_id))).first()

    async def account_version(self, session: AsyncSession, account_id: str) -> int | None:
        return (
            await session.execute(select(accounts.c.version).where(accounts.c.account_id == account_id))
        ).scalar_one_or_none()

    async def save_account(
        self, session: AsyncSession, account_id: str, version: int, state: dict[str, Any], now: datetime
    ) -> None:
        stmt = pg_insert(accounts).values(account_id=account_id, version=version, state=state, updated_at=now)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[accounts.c.account_id],
                set_={"version": stmt.excluded.version, "state": stmt.excluded.state, "updated_at": now},
            )
        )

    async def record_receivables(self, session: AsyncSession, states: Sequence[AccountUpdated]) -> None:
        """Keep the receivables history the period KPIs need, from applied account states (call it where
        account states are saved; a batch may hold several states of one account, in version order).

        - ``receivable_snapshots``: per account and currency, the open and not-yet-due receivables on the
          state's ``as_of`` day, written only when they differ from the latest row on or before that day;
          a currency that left the state's balances is recorded as 0. Only the latest state of each
          account in ``states`` is recorded (the day's last state is the day's balance).
        - ``invoices_issued``: every invoice open in any of ``states`` (its total as last seen).
        """
        if not states:
            return
        latest: dict[str, AccountUpdated] = {}
        invoices: dict[tuple[str, str], tuple[str, int, date]] = {}
        for state in states:
            if state.account_id not in latest or latest[state.account_id].version < state.version:
                latest[state.account_id] = state
            for i in state.open_invoices:
                invoices[(state.account_id, i.invoice_id)] = (i.currency, i.amount_minor, i.issue_date)
        snapshot_rows = [
            (s.account_id, b.currency, s.as_of.astimezone(UTC).date(), b.open_minor, b.buckets.current)
            for s in latest.values()
            for b in s.balances
        ]
        await session.execute(
            _RECORD_RECEIVABLES,
            {
                "inv_acc": [k[0] for k in invoices],
                "inv_id": [k[1] for k in invoices],
                "inv_cur": [v[0] for v in invoices.values()],
                "inv_amount": [v[1] for v in invoices.values()],
                "inv_issued": [v[2] for v in invoices.values()],
                "accounts": list(latest),
                "days": [s.as_of.astimezone(UTC).date() for s in latest.values()],
                "acc": [r[0] for r in snapshot_rows],
                "cur": [r[1] for r in snapshot_rows],
                "day": [r[2] for r in snapshot_rows],
                "open": [r[3] for r in snapshot_rows],
                "current": [r[4] for r in snapshot_rows],
            },
        )

    async def set_wake(self, session: AsyncSession, account_id: str, wake_at: datetime | None) -> None:
        await session.execute(update(accounts).where(accounts.c.account_id == account_id).values(wake_at=wake_at))

    async def account_versions(self, session: AsyncSession, account_ids: list[str]) -> dict[str, int]:
        rows = await session.execute(
            select(accounts.c.account_id, accounts.c.version).where(accounts.c.account_id == any_(_ids(account_ids)))
        )
        return {str(a): int(v) for a, v in rows}

    async def claim_due(self, session: AsyncSession, now: datetime, limit: int) -> list[tuple[str, str]]:
        """Accounts whose timer has fired, oldest first, with their states as JSON text (parsed straight
        into the model); their rows locked so that no other replica takes them (FOR UPDATE SKIP LOCKED)."""
        rows = await session.execute(
            select(accounts.c.account_id, cast(accounts.c.state, Text))
            .where(accounts.c.wake_at <= now)
            .order_by(accounts.c.wake_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [(str(a), str(s)) for a, s in rows]

    async def due_summary(self, session: AsyncSession, now: datetime) -> tuple[int, datetime | None]:
        """How many timers are due and unfired, and the oldest one's time (for the operator's metrics)."""
        row = (
            await session.execute(select(func.count(), func.min(accounts.c.wake_at)).where(accounts.c.wake_at <= now))
        ).one()
        return int(row[0]), row[1]

    async def open_case(self, session: AsyncSession, account_id: str) -> Row[Any] | None:
        return (
            await session.execute(
                select(cases).where(cases.c.account_id == account_id, cases.c.status.notin_(list(CLOSED)))
            )
        ).first()

    async def get_case(self, session: AsyncSession, case_id: str) -> Row[Any] | None:
        return (await session.execute(select(cases).where(cases.c.case_id == case_id))).first()

    async def latest_case_for_account(self, session: AsyncSession, account_id: str) -> Row[Any] | None:
        """The account's latest closed case: asked only when it has no open case (so its latest case),
        and served by the closed cases' (account_id, opened_at) index (migration 0006)."""
        return (
            await session.execute(
                select(cases)
                .where(cases.c.account_id == account_id, cases.c.status.in_(list(CLOSED)))
                .order_by(cases.c.opened_at.desc())
                .limit(1)
            )
        ).first()

    async def create_case(self, session: AsyncSession, values: dict[str, Any]) -> None:
        await session.execute(insert(cases).values(**values))

    async def update_case(
        self, session: AsyncSession, case_id: str, *, changes_only: bool = False, **values: Any
    ) -> None:
        """Set ``values`` on the case and bump its version. ``changes_only``: only if some value differs
        from the stored one (an evaluation that changes nothing writes nothing and keeps the ETag)."""
        stmt = update(cases).where(cases.c.case_id == case_id).values(version=cases.c.version + 1, **values)
        if changes_only and values:
            stmt = stmt.where(or_(*(cases.c[name].is_distinct_from(value) for name, value in values.items())))
        await session.execute(stmt)

    async def add_timeline(
        self, session: AsyncSession, case_id: str, at: datetime, kind: str, actor: str, data: dict[str, Any]
    ) -> None:
        await session.execute(insert(timeline).values(case_id=case_id, at=at, kind=kind, actor=actor, data=data))

    async def timeline(self, session: AsyncSession, case_id: str) -> list[Row[Any]]:
        rows = await session.execute(
            select(timeline).where(timeline.c.case_id == case_id).order_by(timeline.c.at, timeline.c.id)
        )
        return list(rows)

    async def lock_case(self, session: AsyncSession, case_id: str) -> Row[Any] | None:
        return (await session.execute(select(cases).where(cases.c.case_id == case_id).with_for_update())).first()

    async def list_cases(
        self,
        session: AsyncSession,
        *,
        statuses: list[str],
        stage: str | None,
        tier: str | None,
        assignee: str | None,
        currency: str | None,
        min_amount_minor: int | None,
        sort: str,
        after: tuple[int | str, str] | None,
        limit: int,
    ) -> list[Row[Any]]:
        """The worklist: keyset pagination on (priority, case_id) descending or (opened_at, case_id) ascending."""
        stmt = self.worklist_statement(
            statuses=statuses,
            stage=stage,
            tier=tier,
            assignee=assignee,
            currency=currency,
            min_amount_minor=min_amount_minor,
            sort=sort,
            after=after,
            limit=limit,
        )
        return list(await session.execute(stmt))

    @staticmethod
    def worklist_statement(
        *,
        statuses: list[str],
        stage: str | None,
        tier: str | None,
        assignee: str | None,
        currency: str | None,
        min_amount_minor: int | None,
        sort: str,
        after: tuple[int | str, str] | None,
        limit: int,
    ) -> Select[Any]:
        """The worklist page's query. Every shape is an index range scan in the sort's order (migration
        0003): the active cases' (sort key, case_id, tier, stage, currency, assignee, overdue_minor)
        indexes evaluate the equality and minimum-amount filters on the index entries, so a page reads
        only the matching rows from the table; a single status has its own (status, sort key) indexes."""
        stmt = select(cases).where(cases.c.status.in_(statuses))
        if stage:
            stmt = stmt.where(cases.c.stage == stage)
        if tier:
            stmt = stmt.where(cases.c.tier == tier)
        if assignee:
            stmt = stmt.where(cases.c.assignee == assignee)
        if currency:
            stmt = stmt.where(cases.c.currency == currency)
        if min_amount_minor is not None:
            stmt = stmt.where(cases.c.overdue_minor >= min_amount_minor)
        if sort == "priority":
            if after is not None:
                stmt = stmt.where(
                    tuple_(cases.c.priority, cases.c.case_id) < tuple_(literal(after[0]), literal(after[1]))
                )
            stmt = stmt.order_by(cases.c.priority.desc(), cases.c.case_id.desc())
        else:
            if after is not None:
                stmt = stmt.where(
                    tuple_(cases.c.opened_at, cases.c.case_id) > tuple_(literal(after[0]), literal(after[1]))
                )
            stmt = stmt.order_by(cases.c.opened_at, cases.c.case_id)
        return stmt.limit(limit)

    async def fees_assessed(self, session: AsyncSession, case_id: str) -> set[tuple[str, str]]:
        rows = await session.execute(
            select(timeline.c.data["invoice_id"].astext, timeline.c.data["kind"].astext).where(
                timeline.c.case_id == case_id, timeline.c.kind == "late_fee_assessed"
            )
        )
        return {(str(i), str(k)) for i, k in rows}

    # ------------------------------------------------------------------ promises, plans, disputes

    async def add_promise(self, session: AsyncSession, values: dict[str, Any]) -> None:
        await session.execute(insert(promises).values(**values))

    async def pending_promise(self, session: AsyncSession, case_id: str) -> Row[Any] | None:
        return (
            await session.execute(select(promises).where(promises.c.case_id == case_id, promises.c.status == "pending"))
        ).first()

    async def settle_promise(self, session: AsyncSession, promise_id: str, status: str, at: datetime) -> None:
        await session.execute(
            update(promises).where(promises.c.promise_id == promise_id).values(status=status, settled_at=at)
        )

    async def add_plan(self, session: AsyncSession, values: dict[str, Any]) -> None:
        await session.execute(insert(payment_plans).values(**values))

    async def active_plan(self, session: AsyncSession, case_id: str) -> Row[Any] | None:
        return (
            await session.execute(
                select(payment_plans).where(payment_plans.c.case_id == case_id, payment_plans.c.status == "active")
            )
        ).first()

    async def update_plan(self, session: AsyncSession, plan_id: str, **values: Any) -> None:
        await session.execute(update(payment_plans).where(payment_plans.c.plan_id == plan_id).values(**values))

    async def add_dispute(self, session: AsyncSession, values: dict[str, Any]) -> None:
        await session.execute(insert(disputes).values(**values))

    async def dispute(self, session: AsyncSession, case_id: str, dispute_id: str) -> Row[Any] | None:
        return (
            await session.execute(
                select(disputes).where(disputes.c.case_id == case_id, disputes.c.dispute_id == dispute_id)
            )
        ).first()

    async def open_disputes(self, session: AsyncSession, case_id: str) -> int:
        return int(
            (
                await session.execute(
                    select(func.count()).where(disputes.c.case_id == case_id, disputes.c.status == "open")
                )
            ).scalar_one()
        )

    async def resolve_dispute(self, session: AsyncSession, dispute_id: str, **values: Any) -> None:
        await session.execute(update(disputes).where(disputes.c.dispute_id == dispute_id).values(**values))

    async def agreements(self, session: AsyncSession, case_id: str) -> dict[str, list[dict[str, Any]]]:
        ps = await session.execute(select(promises).where(promises.c.case_id == case_id))
        pl = await session.execute(select(payment_plans).where(payment_plans.c.case_id == case_id))
        ds = await session.execute(select(disputes).where(disputes.c.case_id == case_id))
        return {
            "promises": [dict(r._mapping) for r in ps],
            "payment_plans": [dict(r._mapping) for r in pl],
            "disputes": [dict(r._mapping) for r in ds],
        }

    # ------------------------------------------------------------------ API keys and idempotency

    async def add_key(self, session: AsyncSession, values: dict[str, Any]) -> None:
        await session.execute(insert(api_keys).values(**values))

    async def key(self, session: AsyncSession, key_id: str) -> Row[Any] | None:
        return (
            await session.execute(select(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None)))
        ).first()

    async def revoke_key(self, session: AsyncSession, key_id: str, now: datetime) -> bool:
        result = await session.execute(
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(api_keys.c.key_id)
        )
        return result.first() is not None

    async def lock_idempotency(self, session: AsyncSession, principal: str, key: str) -> Row[Any] | None:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('idem:' || :p || ':' || :k))"), {"p": principal, "k": key}
        )
        return (
            await session.execute(
                select(idempotency_keys).where(idempotency_keys.c.principal == principal, idempotency_keys.c.key == key)
            )
        ).first()

    async def save_idempotency(self, session: AsyncSession, values: dict[str, Any]) -> None:
        await session.execute(insert(idempotency_keys).values(**values))

    # ------------------------------------------------------------------ reports

    async def aging(self, session: AsyncSession) -> list[Row[Any]]:
        return list(
            await session.execute(
                text(
                    """
                    SELECT b->>'currency' AS currency,
                           count(DISTINCT a.account_id) AS accounts,
                           sum((b->>'open_minor')::bigint) AS open_minor,
                           sum((b->>'overdue_minor')::bigint) AS overdue_minor,
                           sum(coalesce((b->'buckets'->>'current')::bigint, 0)) AS current,
                           sum(coalesce((b->'buckets'->>'d1_30')::bigint, 0)) AS d1_30,
                           sum(coalesce((b->'buckets'->>'d31_60')::bigint, 0)) AS d31_60,
                           sum(coalesce((b->'buckets'->>'d61_90')::bigint, 0)) AS d61_90,
                           sum(coalesce((b->'buckets'->>'d90_plus')::bigint, 0)) AS d90_plus
                    FROM case_manager.accounts a, jsonb_array_elements(a.state->'balances') b
                    GROUP BY 1 ORDER BY 1
                    """
                )
            )
        )

    async def receivables_at(self, session: AsyncSession, day: date) -> dict[str, tuple[int, int]]:
        """Per currency: (open, not yet due) receivables at the close of ``day``, from the history."""
        rows = await session.execute(
            text(
                """
                SELECT currency, sum(open_minor) AS open_minor, sum(current_minor) AS current_minor
                FROM (SELECT DISTINCT ON (account_id, currency) currency, open_minor, current_minor
                      FROM case_manager.receivable_snapshots
                      WHERE day <= :day
                      ORDER BY account_id, currency, day DESC) latest
                GROUP BY currency
                """
            ),
            {"day": day},
        )
        return {str(r.currency): (int(r.open_minor), int(r.current_minor)) for r in rows}

    async def credit_sales(self, session: AsyncSession, first: date, last: date) -> dict[str, int]:
        """Per currency: the total of the invoices issued from ``first`` to ``last`` (inclusive)."""
        rows = await session.execute(
            select(invoices_issued.c.currency, func.sum(invoices_issued.c.amount_minor))
            .where(invoices_issued.c.issue_date.between(first, last))
            .group_by(invoices_issued.c.currency)
        )
        return {str(c): int(n) for c, n in rows}

    async def case_counts(self, session: AsyncSession) -> list[Row[Any]]:
        return list(
            await session.execute(
                select(cases.c.status, cases.c.stage, func.count().label("n")).group_by(cases.c.status, cases.c.stage)
            )
        )

    async def promise_counts(
        self, session: AsyncSession, start: datetime | None = None, end: datetime | None = None
    ) -> dict[str, int]:
        """Promises by status: those pending now and, of the others, those settled in [start, end)."""
        stmt = select(promises.c.status, func.count()).group_by(promises.c.status)
        if start is not None and end is not None:
            stmt = stmt.where(
                (promises.c.status == "pending") | ((promises.c.settled_at >= start) & (promises.c.settled_at < end))
            )
        rows = await session.execute(stmt)
        return {str(s): int(n) for s, n in rows}

    async def recovery(
        self, session: AsyncSession, start: datetime | None = None, end: datetime | None = None
    ) -> list[Row[Any]]:
        """Per currency: what cases closed in [start, end) owed when they opened, and how much of it closed
        as paid."""
        stmt = (
            select(
                cases.c.currency,
                func.sum(cases.c.opened_overdue_minor).label("owed"),
                func.sum(cases.c.opened_overdue_minor).filter(cases.c.status == "resolved").label("recovered"),
            )
            .where(cases.c.status.in_(["resolved", "written_off"]), cases.c.currency.isnot(None))
            .group_by(cases.c.currency)
            .order_by(cases.c.currency)
        )
        if start is not None and end is not None:
            stmt = stmt.where(cases.c.closed_at >= start, cases.c.closed_at < end)
        return list(await session.execute(stmt))
