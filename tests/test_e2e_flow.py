"""The flow that proves the foundation, through the four services running as real processes.

POST a customer and an invoice due 10 days ago to ingest → scoring publishes the account state
with a risk tier → case_manager opens a case at overdue_7 → notifier delivers one email to the
SMTP sink and one SMS to the SMS sink → the deliveries land on the case's timeline. Then the full
payment → the case resolves and nothing more is sent. Duplicates change nothing; a malformed
event gets a 422 problem body naming the bad field; no log line carries personal data.
"""

from __future__ import annotations

import email
import email.policy
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from arrears_dev.sms_sink import read_messages as read_sms
from arrears_dev.smtp_sink import read_messages as read_mail
from arrears_dev.stack import SERVICES, StackPorts, free_port, service_env, start_service, start_sinks, stop_process
from tests.conftest import Databases, migrated_database, run_cli

pytestmark = pytest.mark.e2e
T = TypeVar("T")


@dataclass
class Stack:
    ports: StackPorts
    var: Path
    procs: dict[str, subprocess.Popen[bytes]]
    cases_token: str = ""  # a cases:read API key for the case manager (bearer auth is on by default)

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{getattr(self.ports, service)}{path}"

    def mail(self) -> list[EmailMessage]:
        out: list[EmailMessage] = []
        for raw in read_mail(self.var / "mail"):
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            out.append(msg)
        return out

    def sms(self) -> list[dict[str, Any]]:
        return read_sms(self.var / "sms" / "messages.jsonl")

    def logs(self) -> str:
        return "".join((self.var / "log" / f"{name}.log").read_text() for name, _, _ in SERVICES)


@pytest.fixture(scope="module")
def stack(databases: Databases, broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("e2e")
    url = migrated_database(databases, broker, "arrears_e2e")
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
    env = service_env(url, ports, {"ARREARS_CASES_SWEEP_SECONDS": "1", "ARREARS_NOTIFIER_POLL_SECONDS": "0.2"})
    key = run_cli("arrears_case_manager.cli", "keys", "create", "--name", "e2e", "--scope", "cases:read", env=env)
    assert key.returncode == 0, key.stderr
    procs = {name: start_service(name, env, var / "log") for name, _, _ in SERVICES}
    stack = Stack(ports, var, procs, json.loads(key.stdout)["token"])
    try:
        for name, _, _ in SERVICES:
            url = stack.url(name, "/readyz")
            wait_until(lambda u=url: _ready(u), 90, f"{name} ready")  # type: ignore[misc]
        yield stack
    finally:
        for proc in procs.values():
            stop_process(proc)
        for proc in sinks:
            stop_process(proc)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def daytime_zone() -> str:
    """An IANA zone where it is now around noon, so the contact window is open whenever the test runs."""
    offset = 12 - datetime.now(UTC).hour
    offset = max(-12, min(14, offset))
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def cloud_event(type_: str, data: dict[str, Any], *, id_: str | None = None) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": id_ or str(uuid.uuid4()),
        "source": "erp/e2e",
        "type": type_,
        "time": datetime.now(UTC).isoformat(),
        "data": data,
    }


def test_overdue_invoice_flows_end_to_end(stack: Stack) -> None:
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    name, address, phone = "Erika Mustermann", f"erika.{account.lower()}@example.com", "+4915112345678"
    due = date.today() - timedelta(days=10)
    customer = cloud_event(
        "ar.customer.upserted",
        {
            "account_id": account,
            "name": name,
            "email": address,
            "phone": phone,
            "country": "DE",
            "timezone": daytime_zone(),
            "language": "en",
            "consent": {"email": True, "sms": True},
        },
    )
    invoice = cloud_event(
        "ar.invoice.issued",
        {
            "invoice_id": f"{account}-INV-1",
            "invoice_number": "2026-0001",
            "account_id": account,
            "issue_date": (due - timedelta(days=30)).isoformat(),
            "due_date": due.isoformat(),
            "currency": "EUR",
            "amount_minor": 123_450,
        },
    )
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {stack.cases_token}"}) as http:
        r = http.post(stack.url("ingest", "/v1/events"), json=customer)
        assert r.status_code == 202, r.text
        assert r.json() == {"id": customer["id"], "status": "accepted"}
        r = http.post(stack.url("ingest", "/v1/events"), json=invoice)
        assert r.status_code == 202, r.text

        # The same event id again is a duplicate and changes nothing.
        again = http.post(stack.url("ingest", "/v1/events"), json=invoice)
        assert again.status_code == 200
        assert again.json()["status"] == "duplicate"

        # A malformed event: 422 with an RFC 9457 problem body naming the bad field.
        bad = cloud_event("ar.invoice.issued", {**invoice["data"], "invoice_id": "X-2", "amount_minor": "12.50"})
        r = http.post(stack.url("ingest", "/v1/events"), json=bad)
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["status"] == 422
        assert problem["title"]
        assert [e["field"] for e in problem["errors"]] == ["data.amount_minor"]

        # Scoring publishes the account state with a risk tier.
        state = wait_until(lambda: _json(http, stack.url("scoring", f"/v1/accounts/{account}")), 60, "account state")
        assert state["open_invoices"][0]["open_minor"] == 123_450
        assert state["open_invoices"][0]["days_past_due"] == 10
        assert state["balances"][0]["buckets"]["d1_30"] == 123_450
        assert state["risk"]["tier"] in ("low", "medium", "high", "critical")

        # The case manager opens a case at overdue_7.
        case = wait_until(lambda: _json(http, stack.url("case_manager", f"/v1/accounts/{account}/case")), 60, "case")
        assert case["status"] == "open"
        assert case["stage"] == "overdue_7"

        # The notifier delivers one email and one SMS.
        mails = wait_until(lambda: [m for m in stack.mail() if m["To"] == address], 60, "the email")
        texts = wait_until(lambda: [s for s in stack.sms() if s["to"] == phone], 60, "the SMS")
        assert len(mails) == 1
        assert len(texts) == 1
        body = mails[0].get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert "2026-0001" in text
        assert "€1,234.50" in text
        assert mails[0]["List-Unsubscribe"]
        assert "€1,234.50" in texts[0]["body"]
        assert "STOP" in texts[0]["body"]

        # Both deliveries land on the case's timeline.
        def delivered() -> list[dict[str, Any]]:
            timeline = _json(http, stack.url("case_manager", f"/v1/cases/{case['case_id']}/timeline"))
            entries = [e for e in (timeline or {}).get("entries", []) if e["kind"] == "delivery"]
            return entries if len(entries) == 2 else []

        entries = wait_until(delivered, 60, "deliveries on the timeline")
        assert {e["data"]["channel"] for e in entries} == {"email", "sms"}
        assert {e["data"]["status"] for e in entries} == {"sent"}

        # The full payment resolves the case.
        payment = cloud_event(
            "ar.payment.received",
            {
                "payment_id": f"{account}-PAY-1",
                "account_id": account,
                "currency": "EUR",
                "amount_minor": 123_450,
                "received_at": datetime.now(UTC).isoformat(),
                "reference": "Invoice 2026-0001",
            },
        )
        assert http.post(stack.url("ingest", "/v1/events"), json=payment).status_code == 202
        resolved = wait_until(
            lambda: (
                (c := _json(http, stack.url("case_manager", f"/v1/accounts/{account}/case")))
                and c["status"] == "resolved"
                and c
            ),
            60,
            "resolution",
        )
        assert resolved["case_id"] == case["case_id"]
        state = _json(http, stack.url("scoring", f"/v1/accounts/{account}"))
        assert state is not None
        assert state["open_invoices"] == []
        assert state["balances"] == []

        # A short thank-you follows the payment, and nothing else (give the sweeper and dispatcher several rounds).
        def both_mails() -> list[EmailMessage]:
            found = [m for m in stack.mail() if m["To"] == address]
            return found if len(found) >= 2 else []

        wait_until(both_mails, 60, "the thank-you")
        time.sleep(4)
        mails = [m for m in stack.mail() if m["To"] == address]
        assert len(mails) == 2
        assert {str(m["Subject"]) for m in mails} == {"Your account is overdue", "Thank you for your payment"}
        assert len([s for s in stack.sms() if s["to"] == phone]) == 1

    logs = stack.logs()
    for secret in (name, address, phone):
        assert secret not in logs, "personal data in a log line"


def _json(http: httpx.Client, url: str) -> Any:
    r = http.get(url)
    return r.json() if r.status_code == 200 else None


def test_services_stop_cleanly_on_sigterm(stack: Stack) -> None:
    """SIGTERM: each service finishes and commits what it holds, then exits 0 well within the grace period."""
    for name, proc in stack.procs.items():
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0, f"{name} did not exit cleanly"
        assert time.monotonic() - started < 25
    logs = stack.logs()
    assert "ended unexpectedly" not in logs
