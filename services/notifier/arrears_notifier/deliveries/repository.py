"""The only place the notifier's tables are queried."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import DateTime, Row, Text, any_, bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_notifier.models import closed_cases, notifications, outbox, suppressions


def _any(name: str) -> Any:
    """``= ANY(:name)`` with the values as one array parameter: the statement's text is the same
    however many values (an IN list is a new statement, compiled by SQLAlchemy and prepared by
    asyncpg, per length)."""
    return any_(bindparam(name, type_=ARRAY(Text)))


# The dispatcher's statements, built once (only their parameters change from batch to batch).
_MARK_SENDING = (
    update(notifications)
    .where(notifications.c.notification_id == _any("ids"), notifications.c.status == "claimed")
    .values(status="sending", claimed_at=bindparam("now"), updated_at=bindparam("now"))
    .returning(notifications.c.notification_id)
)
# Table names come from the models, never from input.
_SUPPRESSED_AMONG = text(
    f"SELECT s.channel, s.address_hash FROM {suppressions.fullname} AS s "  # noqa: S608
    "JOIN unnest(CAST(:channels AS text[]), CAST(:hashes AS text[])) AS k(channel, address_hash) "
    "ON s.channel = k.channel AND s.address_hash = k.address_hash"
)
_RECORD_SENT = text(
    f"UPDATE {notifications.fullname} AS n SET status = 'sent', sent_at = :now, "  # noqa: S608
    "provider_message_id = w.pid, reason = NULL, updated_at = :now "
    "FROM unnest(CAST(:nids AS text[]), CAST(:pids AS text[])) AS w(nid, pid) "
    "WHERE n.notification_id = w.nid AND n.status IN ('claimed', 'sending') RETURNING n.notification_id"
).bindparams(bindparam("now", type_=DateTime(timezone=True)))


# One wave of the group commit (``DeliveryRepository.commit_wave``) as one statement, run on the
# driver's connection outside any transaction block, so that it is its own transaction: one round
# trip with its commit, instead of BEGIN, the marks, the outcomes, the outbox rows and COMMIT.
# Marks and outcomes never name the same row (an outcome is only queued after its mark committed).
# An outcome whose row a status callback has already moved on only gets its send time and provider
# id filled in (as ``record_sent`` does). Data-modifying WITH parts always run to completion, read or
# not. Parameters: $1 now, $2 ids to mark, $3/$4 sent ids and provider ids, $5-$8 outbox topics,
# keys, shards and payloads, $9 their headers (JSON text).
_IN_FLIGHT = "n.status IN ('claimed', 'sending')"
_COMMIT_WAVE = (
    f"WITH marked AS (UPDATE {notifications.fullname} SET status = 'sending', claimed_at = $1, updated_at = $1 "  # noqa: S608
    "WHERE notification_id = ANY($2::text[]) AND status = 'claimed' RETURNING notification_id), "
    f"sent AS (UPDATE {notifications.fullname} AS n SET "
    f"status = CASE WHEN {_IN_FLIGHT} THEN 'sent' ELSE n.status END, "
    f"sent_at = CASE WHEN {_IN_FLIGHT} THEN $1 ELSE coalesce(n.sent_at, $1) END, "
    f"provider_message_id = CASE WHEN {_IN_FLIGHT} THEN w.pid ELSE coalesce(n.provider_message_id, w.pid) END, "
    f"reason = CASE WHEN {_IN_FLIGHT} THEN NULL ELSE n.reason END, "
    f"updated_at = CASE WHEN {_IN_FLIGHT} THEN $1 ELSE n.updated_at END "
    "FROM unnest($3::text[], $4::text[]) AS w(nid, pid) WHERE n.notification_id = w.nid RETURNING 1), "
    f"events AS (INSERT INTO {outbox.fullname} (topic, key, shard, payload, headers) "
    "SELECT t, k, s, p, CAST($9::text AS jsonb) "
    "FROM unnest($5::text[], $6::text[], $7::smallint[], $8::bytea[]) AS u(t, k, s, p) RETURNING 1) "
    "SELECT notification_id FROM marked"
)


# The claim, as one statement run on the driver's connection (its own transaction when none is
# open): due rows taken with FOR UPDATE SKIP LOCKED and marked claimed (``attempts`` given back as it
# was before this claim), each with what the contact rules need to know about it, read in the same
# snapshot, i.e. as it was before this claim: its case's closing reason, the hash of its address as
# PostgreSQL computes it and whether that hash is on the suppression list, and when messages went out
# (or are in flight) to its account on its channel in the last 7 days. $1 now, $2 limit, $3 now - 7 days.
_N, _C, _S = notifications.fullname, closed_cases.fullname, suppressions.fullname
_ADDRESS = (
    "CASE WHEN n.channel = 'email' THEN lower(btrim(n.recipient->>'email')) ELSE btrim(n.recipient->>'phone') END"
)
_CLAIM = (
    f"WITH due AS (SELECT notification_id FROM {_N} WHERE status = 'pending' AND next_attempt_at <= $1 "  # noqa: S608
    "ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED), "
    f"c AS (UPDATE {_N} AS n SET status = 'claimed', attempts = n.attempts + 1, updated_at = $1 "
    "FROM due WHERE n.notification_id = due.notification_id "
    "RETURNING n.notification_id, n.case_id, n.account_id, n.channel, n.template, n.locale, "
    "n.recipient::text AS recipient, n.variables::text AS variables, n.expires_at, n.attempts - 1 AS attempts, "
    "n.reason, n.provider_message_id, n.next_attempt_at, "
    f"encode(sha256(convert_to(n.channel || ':' || {_ADDRESS}, 'UTF8')), 'hex') AS hash) "
    "SELECT c.notification_id, c.case_id, c.account_id, c.channel, c.template, c.locale, c.recipient, "
    "c.variables, c.expires_at, c.attempts, c.reason, c.provider_message_id, "
    f"(SELECT reason FROM {_C} WHERE case_id = c.case_id) AS closed, c.hash, "
    f"EXISTS (SELECT 1 FROM {_S} AS s WHERE s.channel = c.channel AND s.address_hash = c.hash) AS suppressed, "
    f"ARRAY(SELECT coalesce(m.sent_at, m.updated_at) FROM {_N} AS m "
    "WHERE m.account_id = c.account_id AND m.channel = c.channel AND (m.sent_at > $3 "
    "OR (m.status IN ('claimed', 'sending') AND m.updated_at > $3))) AS recent "
    "FROM c ORDER BY c.next_attempt_at"
)


@dataclass(slots=True)
class Claimed:
    """A notification the dispatcher claimed, with what the contact rules need to know about it."""

    notification_id: str
    case_id: str
    account_id: str
    channel: str
    template: str
    locale: str
    recipient: dict[str, Any]
    variables: dict[str, Any]
    expires_at: datetime | None
    attempts: int  # before this claim
    reason: str | None
    provider_message_id: str | None
    closed: str | None  # the case's closing reason
    address_hash: str | None  # as PostgreSQL computed it (None without an address)
    suppressed: bool  # that hash is on the suppression list
    recent: list[datetime]  # sends to the account on this channel in the last 7 days, in flight included


class DeliveryRepository:
    async def record(self, session: AsyncSession, values: dict[str, Any]) -> bool:
        """Record a requested notification; False if its id was recorded before."""
        stmt = (
            pg_insert(notifications)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(notifications.c.notification_id)
        )
        return (await session.execute(stmt)).first() is not None

    async def claim_due(self, connection: Any, now: datetime, limit: int) -> list[Claimed]:
        """Claim up to ``limit`` due notifications in one statement on ``connection`` (an asyncpg
        connection; with no transaction open the claim is its own transaction and is committed when
        this returns), oldest due first."""
        records = await connection.fetch(_CLAIM, now, limit, now - timedelta(days=7))
        loads = orjson.loads
        return [
            Claimed(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                loads(r[6]),
                loads(r[7]),
                r[8],
                r[9],
                r[10],
                r[11],
                r[12],
                r[13],
                r[14],
                r[15],
            )
            for r in records
        ]

    async def stale_sending(
        self, session: AsyncSession, before: datetime, limit: int, status: str = "sending"
    ) -> list[Row[Any]]:
        rows = await session.execute(
            select(notifications)
            .where(notifications.c.status == status, notifications.c.updated_at < before)
            .order_by(notifications.c.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(rows)

    async def set(self, session: AsyncSession, notification_id: str, now: datetime, **values: Any) -> None:
        await session.execute(
            update(notifications)
            .where(notifications.c.notification_id == notification_id)
            .values(updated_at=now, **values)
        )

    async def is_suppressed(self, session: AsyncSession, channel: str, address_hash: str) -> bool:
        found = await session.scalar(
            select(func.count())
            .select_from(suppressions)
            .where(suppressions.c.channel == channel, suppressions.c.address_hash == address_hash)
        )
        return bool(found)

    async def suppress(
        self, session: AsyncSession, channel: str, address_hash: str, reason: str, now: datetime
    ) -> None:
        await session.execute(
            pg_insert(suppressions)
            .values(channel=channel, address_hash=address_hash, reason=reason, at=now)
            .on_conflict_do_nothing()
        )

    async def get(self, session: AsyncSession, notification_id: str) -> Row[Any] | None:
        return (
            await session.execute(select(notifications).where(notifications.c.notification_id == notification_id))
        ).first()

    async def get_for_update(self, session: AsyncSession, notification_id: str) -> Row[Any] | None:
        return (
            await session.execute(
                select(notifications).where(notifications.c.notification_id == notification_id).with_for_update()
            )
        ).first()

    async def record_sent(
        self, session: AsyncSession, notification_id: str, now: datetime, provider_id: str | None
    ) -> None:
        """Record the provider's acceptance. A status callback may have moved the row on already:
        then only the provider id and send time are filled in, the later status stays."""
        changed = await session.execute(
            update(notifications)
            .where(
                notifications.c.notification_id == notification_id,
                notifications.c.status.in_(["claimed", "sending"]),
            )
            .values(status="sent", sent_at=now, provider_message_id=provider_id, reason=None, updated_at=now)
            .returning(notifications.c.notification_id)
        )
        if changed.first() is None:
            await session.execute(
                update(notifications)
                .where(notifications.c.notification_id == notification_id)
                .values(
                    sent_at=func.coalesce(notifications.c.sent_at, now),
                    provider_message_id=func.coalesce(notifications.c.provider_message_id, provider_id),
                )
            )

    async def unsuppress(self, session: AsyncSession, channel: str, address_hash: str, reasons: list[str]) -> bool:
        """Lift a suppression recorded for one of ``reasons`` (a hard bounce is never lifted this way)."""
        result = await session.execute(
            delete(suppressions)
            .where(
                suppressions.c.channel == channel,
                suppressions.c.address_hash == address_hash,
                suppressions.c.reason.in_(reasons),
            )
            .returning(suppressions.c.channel)
        )
        return result.first() is not None

    async def close_case(self, session: AsyncSession, case_id: str, reason: str, now: datetime) -> None:
        await session.execute(
            pg_insert(closed_cases).values(case_id=case_id, reason=reason, at=now).on_conflict_do_nothing()
        )

    async def case_closed(self, session: AsyncSession, case_id: str) -> str | None:
        reason: str | None = await session.scalar(
            select(closed_cases.c.reason).where(closed_cases.c.case_id == case_id)
        )
        return reason

    async def pending_for_case(self, session: AsyncSession, case_id: str) -> list[Row[Any]]:
        rows = await session.execute(
            select(notifications)
            .where(notifications.c.case_id == case_id, notifications.c.status == "pending")
            .with_for_update()
        )
        return list(rows)

    async def count_by_status(self, session: AsyncSession) -> dict[str, int]:
        rows = await session.execute(select(notifications.c.status, func.count()).group_by(notifications.c.status))
        return {status: int(n) for status, n in rows}

    async def mark_sending(self, session: AsyncSession, notification_id: str, now: datetime) -> bool:
        """claimed → sending, committed before the provider call; False if the row moved on meanwhile."""
        changed = await session.execute(
            update(notifications)
            .where(notifications.c.notification_id == notification_id, notifications.c.status == "claimed")
            .values(status="sending", claimed_at=now, updated_at=now)
            .returning(notifications.c.notification_id)
        )
        return changed.first() is not None

    async def mark_sending_many(
        self, session: AsyncSession, notification_ids: list[str], now: datetime
    ) -> frozenset[str]:
        """claimed → sending for a wave of sends in one statement; returns the ids that were still claimed."""
        if not notification_ids:
            return frozenset()
        changed = await session.execute(_MARK_SENDING, {"ids": notification_ids, "now": now})
        return frozenset(str(nid) for nid in changed.scalars())

    async def record_sent_many(self, session: AsyncSession, sent: list[tuple[str, str | None]], now: datetime) -> None:
        """:meth:`record_sent` for a wave of (notification_id, provider_id) in one statement (plus one per
        row a status callback has already moved on, which is rare)."""
        if not sent:
            return
        changed = await session.execute(
            _RECORD_SENT, {"nids": [nid for nid, _ in sent], "pids": [pid for _, pid in sent], "now": now}
        )
        done = {str(nid) for nid in changed.scalars()}
        for notification_id, provider_id in sent:
            if notification_id not in done:
                await self.record_sent(session, notification_id, now, provider_id)

    async def commit_wave(
        self,
        connection: Any,
        mark_ids: list[str],
        sent: list[tuple[str, str | None]],
        events: list[tuple[str, str | None, int, bytes]],
        headers_json: str,
        now: datetime,
    ) -> frozenset[str]:
        """One wave in one statement and one commit on ``connection`` (an asyncpg connection with no
        transaction open): ``mark_ids`` claimed → sending (returns those that were still claimed),
        ``sent`` as :meth:`record_sent_many` records them, and ``events`` (topic, key, shard,
        payload) into the outbox, all or nothing."""
        rows = await connection.fetch(
            _COMMIT_WAVE,
            now,
            mark_ids,
            [nid for nid, _ in sent],
            [pid for _, pid in sent],
            [e[0] for e in events],
            [e[1] for e in events],
            [e[2] for e in events],
            [e[3] for e in events],
            headers_json,
        )
        return frozenset(str(r[0]) for r in rows)

    async def suppressed_among(
        self, session: AsyncSession, keys: AbstractSet[tuple[str, str]]
    ) -> AbstractSet[tuple[str, str]]:
        if not keys:
            return set()
        ordered = list(keys)
        rows = await session.execute(
            _SUPPRESSED_AMONG, {"channels": [c for c, _ in ordered], "hashes": [h for _, h in ordered]}
        )
        return {(channel, hashed) for channel, hashed in rows}
