"""The only place the case manager's tables are queried (batch.py holds the set-based reads and writes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, Text, cast, func, insert, literal, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_case_manager.cases.state import CLOSED
from arrears_case_manager.models import (
    accounts,
    api_keys,
    cases,
    disputes,
    idempotency_keys,
    payment_plans,
    promises,
    timeline,
)


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

    async def set_wake(self, session: AsyncSession, account_id: str, wake_at: datetime | None) -> None:
        await session.execute(update(accounts).where(accounts.c.account_id == account_id).values(wake_at=wake_at))

    async def account_versions(self, session: AsyncSession, account_ids: list[str]) -> dict[str, int]:
        rows = await session.execute(
            select(accounts.c.account_id, accounts.c.version).where(accounts.c.account_id.in_(account_ids))
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
        return (
            await session.execute(
                select(cases).where(cases.c.account_id == account_id).order_by(cases.c.opened_at.desc()).limit(1)
            )
        ).first()

    async def create_case(self, session: AsyncSession, values: dict[str, Any]) -> None:
        await session.execute(insert(cases).values(**values))

    async def update_case(self, session: AsyncSession, case_id: str, **values: Any) -> None:
        await session.execute(
            update(cases).where(cases.c.case_id == case_id).values(version=cases.c.version + 1, **values)
        )

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
        return list(await session.execute(stmt.limit(limit)))

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

    async def dso(self, session: AsyncSession) -> list[Row[Any]]:
        """Open receivables weighted by age since issue, per currency."""
        return list(
            await session.execute(
                text(
                    """
                    SELECT i->>'currency' AS currency,
                           sum((i->>'open_minor')::bigint) AS open_minor,
                           sum((i->>'open_minor')::bigint
                               * ((a.state->>'as_of')::date - (i->>'issue_date')::date)) AS weighted_days
                    FROM case_manager.accounts a, jsonb_array_elements(a.state->'open_invoices') i
                    GROUP BY 1 ORDER BY 1
                    """
                )
            )
        )

    async def case_counts(self, session: AsyncSession) -> list[Row[Any]]:
        return list(
            await session.execute(
                select(cases.c.status, cases.c.stage, func.count().label("n")).group_by(cases.c.status, cases.c.stage)
            )
        )

    async def promise_counts(self, session: AsyncSession) -> dict[str, int]:
        rows = await session.execute(select(promises.c.status, func.count()).group_by(promises.c.status))
        return {str(s): int(n) for s, n in rows}

    async def recovery(self, session: AsyncSession) -> list[Row[Any]]:
        """Per currency: what closed cases owed when they opened, and how much of it closed as paid."""
        return list(
            await session.execute(
                select(
                    cases.c.currency,
                    func.sum(cases.c.opened_overdue_minor).label("owed"),
                    func.sum(cases.c.opened_overdue_minor).filter(cases.c.status == "resolved").label("recovered"),
                )
                .where(cases.c.status.in_(["resolved", "written_off"]), cases.c.currency.isnot(None))
                .group_by(cases.c.currency)
            )
        )
