"""Kill the notifier (SIGKILL) mid-batch 20 times while it works through a backlog of SMS and
email requests, then let it finish, and count what reached the real sinks (the Twilio-compatible
HTTP sink and the aiosmtpd sink, both separate processes that keep no idempotency of their own).

- SMS: every requested message reached the provider exactly once. After a crash, recovery asks
  the provider (its Messages list) whether it took a message that was in flight.
- Email: SMTP cannot be asked, so an email in flight at the moment of a kill is never resent and is
  reported failed "outcome unknown". Every email reached the sink at most once; every one recorded
  as sent reached it exactly once; the unknown ones are bounded by kills x SMTP pool size.
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
from sqlalchemy import select
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
N_SMS = 800
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


def test_killed_twenty_times_mid_batch_nothing_is_sent_twice(crash: Crash, broker: str) -> None:
    # Held back for a while, so that one process records the whole backlog before sending starts.
    items = requests(datetime.now(UTC) + timedelta(seconds=25))
    ids = {i["notification_id"] for i in items}
    asyncio.run(produce(broker, items))
    rng = random.Random(6)
    # First let one process record the whole backlog (the consumer's own crash safety, inbox plus
    # offsets committed after the transaction, is tested in tests/integration/test_messaging.py),
    # then kill it mid-batch once not_before has passed. A killed consumer holds its partitions
    # until the group's session times out, so recording first keeps the dispatcher under test.
    proc = crash.start()
    wait_until(lambda: len(asyncio.run(rows(crash.url, ids))) == len(ids), 120, "the backlog recorded")
    wait_until(lambda: crash.sms_count() + crash.mail_count() > 0, 60, "sending to start")
    time.sleep(rng.uniform(0.0, 0.25))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    kills = 1
    while kills < KILLS:
        before = crash.sms_count() + crash.mail_count()
        assert before < len(items) - KILLS * SMTP_POOL, "the backlog ran out before the 20th kill; raise N_SMS"
        t0 = time.monotonic()
        proc = crash.start()
        # Poll closely and kill soon after sending resumes, so that a fast (quiet) machine does not
        # run through the backlog before the 20th kill.
        wait_until(lambda b=before: crash.sms_count() + crash.mail_count() > b, 90, "sending to resume", 0.02)  # type: ignore[misc]
        time.sleep(rng.uniform(0.0, 0.1))
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
    unknown = []
    for item in items:
        status, reason = final[item["notification_id"]]
        if item["channel"] == "sms":
            assert status == "sent", (item["notification_id"], status, reason)
            assert sms_sent[item["recipient"]["phone"]] == 1, item["notification_id"]
        else:
            copies = mail_sent[item["recipient"]["email"]]
            assert copies <= 1, item["notification_id"]
            if status == "sent":
                assert copies == 1, item["notification_id"]
            else:
                assert reason is not None
                assert reason.startswith("outcome unknown"), reason
                unknown.append((item["notification_id"], copies))
    assert sum(sms_sent.values()) == N_SMS
    assert len(unknown) <= KILLS * SMTP_POOL
    print(
        f"\nemails with an unknown outcome after {KILLS} kills: {len(unknown)} of {N_EMAIL}; "
        f"of those {sum(c for _, c in unknown)} had reached the sink"
    )
