"""Kill the notifier (SIGKILL) mid-batch 20 times while it works through a backlog of SMS and
email requests, then let it finish, and count what reached the real sinks (the Twilio-compatible
HTTP sink and the aiosmtpd sink, both separate processes that keep no idempotency of their own).

- SMS: every requested message reached the provider exactly once. After a crash, recovery asks
  the provider (its Messages list) whether it took a message that was in flight.
- Email: the notifier runs with ``ARREARS_SMTP_LOOKUP_URL`` pointing at the sink's
  Mailpit-compatible search API, so recovery searches for an email that was in flight by its
  Message-ID: every requested email reached the sink exactly once and is recorded as sent.
  (Without a lookup URL an email in flight is never resent and is reported failed "outcome
  unknown": tests/notifier/test_deliveries.py covers that.)
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import create_async_engine

from arrears_dev.sms_sink import read_messages
from arrears_dev.stack import StackPorts, free_port, service_env, start_service, start_sinks, stop_process
from arrears_notifier.models import notifications
from arrears_shared.events.envelope import new_event
from arrears_shared.settings import async_database_url
from arrears_shared.topics import NOTIFICATIONS
from tests.conftest import Databases, migrated_database
from tests.test_e2e_flow import daytime_zone, wait_until

KILLS = 20
N_SMS = 2000
N_EMAIL = 300
SMTP_POOL = 4


class Crash:
    def __init__(self, url: str, env: dict[str, str], var: Path) -> None:
        self.url, self.env, self.var = url, env, var

    def sms_count(self) -> int:
        store = self.var / "sms" / "messages.jsonl"
        return store.read_bytes().count(b"\n") if store.exists() else 0

    def mail_count(self) -> int:
        return sum(1 for _ in (self.var / "mail").glob("*.eml"))

    def start(self) -> subprocess.Popen[bytes]:
        return start_service("notifier", self.env, self.var / "log")


@pytest.fixture(scope="module")
def crash(databases: Databases, broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crash]:
    var = tmp_path_factory.mktemp("crash")
    url = migrated_database(databases, broker, "arrears_crash")
    ports = StackPorts(
        broker=int(broker.rsplit(":", 1)[1]),
        smtp=free_port(),
        sms=free_port(),
        ingest=free_port(),
        scoring=free_port(),
        case_manager=free_port(),
        notifier=free_port(),
        smtp_api=free_port(),  # service_env sets ARREARS_SMTP_LOOKUP_URL to it
    )
    sinks = start_sinks(ports, var)
    env = service_env(
        url,
        ports,
        {
            "ARREARS_NOTIFIER_POLL_SECONDS": "0.1",
            "ARREARS_NOTIFIER_CONCURRENCY": "20",
            "ARREARS_NOTIFIER_STALE_SENDING_SECONDS": "4",
            "ARREARS_SMS_TIMEOUT_SECONDS": "2",
            "ARREARS_SMTP_POOL_SIZE": str(SMTP_POOL),
            "ARREARS_CONTACT_CAP_PER_7_DAYS": "100",
        },
    )
    try:
        yield Crash(url, env, var)
    finally:
        for proc in sinks:
            stop_process(proc)


def requests(not_before: datetime) -> list[dict[str, Any]]:
    zone = daytime_zone()
    out = []
    for i in range(N_SMS + N_EMAIL):
        channel = "sms" if i < N_SMS else "email"
        account = f"CRASH-{uuid.uuid4().hex[:10]}"
        recipient: dict[str, Any] = {"timezone": zone}
        if channel == "sms":
            recipient["phone"] = f"+491700{i:07d}"
        else:
            recipient["email"] = f"crash-{i}@example.com"
        out.append(
            {
                "notification_id": f"{account}:overdue_7:{channel}",
                "case_id": f"CASE-{account}",
                "account_id": account,
                "channel": channel,
                "template": "overdue_polite",
                "locale": "en",
                "not_before": not_before.isoformat(),
                "recipient": recipient,
                "variables": {
                    "customer_name": "Crash Test",
                    "invoices": [{"number": f"INV-{i}", "open": "€10.00", "due_date": "2026-01-01"}],
                    "total_due": f"€{i}.00",
                    "max_days_past_due": 7,
                    "deadline": "2026-02-01",
                    "payment_link": f"https://pay.example.com/{account}",
                },
            }
        )
    return out


async def produce(bootstrap: str, items: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        for item in items:
            event = new_event(
                type="collections.notification.requested",
                source="test/crash",
                subject=item["account_id"],
                data=item,
                time=datetime.now(UTC),
                id=item["notification_id"],
            )
            await producer.send(NOTIFICATIONS, event.to_json(), key=item["account_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


async def rows(url: str, ids: set[str]) -> dict[str, tuple[str, str | None]]:
    engine = create_async_engine(async_database_url(url))
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                select(notifications.c.notification_id, notifications.c.status, notifications.c.reason)
            )
            return {nid: (status, reason) for nid, status, reason in result if nid in ids}
    finally:
        await engine.dispose()


async def release(url: str, ids: set[str]) -> None:
    """Make the held-back backlog due now."""
    engine = create_async_engine(async_database_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(notifications)
                .where(notifications.c.notification_id.in_(ids), notifications.c.status == "pending")
                .values(next_attempt_at=datetime.now(UTC))
            )
    finally:
        await engine.dispose()


def test_killed_twenty_times_mid_batch_nothing_is_sent_twice(crash: Crash, broker: str) -> None:
    # Held back, so that one process records the whole backlog before sending starts; released
    # below once it is recorded (however long that takes on a busy machine).
    items = requests(datetime.now(UTC) + timedelta(hours=1))
    ids = {i["notification_id"] for i in items}
    asyncio.run(produce(broker, items))
    rng = random.Random(6)
    # First let one process record the whole backlog (the consumer's own crash safety, inbox plus
    # offsets committed after the transaction, is tested in tests/integration/test_messaging.py),
    # then release it and kill the process mid-batch. A killed consumer holds its partitions
    # until the group's session times out, so recording first keeps the dispatcher under test.
    proc = crash.start()
    wait_until(lambda: len(asyncio.run(rows(crash.url, ids))) == len(ids), 120, "the backlog recorded")
    asyncio.run(release(crash.url, ids))
    wait_until(lambda: crash.sms_count() + crash.mail_count() > 0, 60, "sending to start", 0.02)
    time.sleep(rng.uniform(0.0, 0.05))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    kills = 1
    while kills < KILLS:
        before = crash.sms_count() + crash.mail_count()
        assert before < len(items) - KILLS * SMTP_POOL, "the backlog ran out before the 20th kill; raise N_SMS"
        t0 = time.monotonic()
        proc = crash.start()
        # Poll closely and kill soon after sending resumes, so that a fast (quiet) machine does not
        # run through the backlog before the 20th kill (one process sends 1,500 SMS/s and more on a
        # quiet machine here: 30 ms is up to about 50 messages).
        wait_until(lambda b=before: crash.sms_count() + crash.mail_count() > b, 90, "sending to resume", 0.02)  # type: ignore[misc]
        time.sleep(rng.uniform(0.0, 0.03))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        kills += 1
        print(f"kill {kills}: {time.monotonic() - t0:.1f}s, sent so far {crash.sms_count() + crash.mail_count()}")

    t0 = time.monotonic()
    proc = crash.start()
    try:

        def settled() -> dict[str, tuple[str, str | None]] | None:
            found = asyncio.run(rows(crash.url, ids))
            done = len(found) == len(ids) and all(s in ("sent", "failed") for s, _ in found.values())
            return found if done else None

        final = wait_until(settled, 240, "every notification settled")
        assert final is not None
    finally:
        stop_process(proc)

    print(f"settled in {time.monotonic() - t0:.1f}s")
    sms_sent = Counter(m["to"] for m in read_messages(crash.var / "sms" / "messages.jsonl"))
    parser = BytesParser(policy=default_policy)
    mail_sent = Counter(
        str(parser.parsebytes(p.read_bytes(), headersonly=True)["To"]) for p in (crash.var / "mail").glob("*.eml")
    )
    for item in items:
        status, reason = final[item["notification_id"]]
        assert status == "sent", (item["notification_id"], status, reason)
        if item["channel"] == "sms":
            assert sms_sent[item["recipient"]["phone"]] == 1, item["notification_id"]
        else:
            assert mail_sent[item["recipient"]["email"]] == 1, item["notification_id"]
    assert sum(sms_sent.values()) == N_SMS
    assert sum(mail_sent.values()) == N_EMAIL
    print(f"\nafter {KILLS} kills every one of {N_SMS} SMS and {N_EMAIL} emails reached its sink once")
