"""Ingest's document endpoints, import batches and API keys, in process against the real database.

The app runs without its background loops (no consumer joins the shared broker's groups): what it
accepts is checked in ingest's outbox, where the relay would pick it up.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from arrears_ingest.app import SERVICE, create_app
from arrears_ingest.auth.service import ApiKeyService, CreatedKey, sign
from arrears_ingest.models import inbox, outbox
from arrears_ingest.settings import IngestSettings
from arrears_shared.clock import FixedClock
from arrears_shared.runtime import Runtime
from arrears_shared.topics import LEDGER
from tests.ingest.test_formats import CAMT, HOSTILE, entry, ubl

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def _client(url: str, broker: str, *, auth: bool, max_body: int = 10 * 1024 * 1024) -> tuple[FastAPI, Runtime]:
    settings = IngestSettings.model_validate(
        {
            "ARREARS_DATABASE_URL": url,
            "kafka_bootstrap_servers": broker,
            "ARREARS_INGEST_AUTH_REQUIRED": auth,
            "ARREARS_INGEST_MAX_BODY_BYTES": max_body,
        }
    )
    runtime = Runtime(service=SERVICE, settings=settings, outbox_table=outbox, inbox_table=inbox, clock=FixedClock(NOW))
    app = create_app(settings, runtime)
    app.state.runtime = runtime
    return app, runtime


@pytest.fixture
async def client(ingest_db: str, broker: str) -> AsyncIterator[httpx.AsyncClient]:
    app, runtime = await _client(ingest_db, broker, auth=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as c:
        c.app_runtime = runtime  # type: ignore[attr-defined]
        yield c
    await runtime.engine.dispose()


@pytest.fixture
async def secure(ingest_db: str, broker: str) -> AsyncIterator[httpx.AsyncClient]:
    app, runtime = await _client(ingest_db, broker, auth=True, max_body=64 * 1024)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as c:
        c.app_runtime = runtime  # type: ignore[attr-defined]
        yield c
    await runtime.engine.dispose()


async def ledger(client: httpx.AsyncClient, account: str | None) -> list[dict[str, Any]]:
    """What ingest queued for ar.ledger.v1 (for ``account``, or all)."""
    runtime: Runtime = client.app_runtime  # type: ignore[attr-defined]
    query = select(outbox.c.payload).where(outbox.c.topic == LEDGER).order_by(outbox.c.id)
    if account is not None:
        query = query.where(outbox.c.key == account)
    async with runtime.sessionmaker() as session:
        rows = await session.execute(query)
        return [orjson.loads(r.payload) for r in rows]


def acct() -> str:
    return f"ACC-{uuid.uuid4().hex[:8]}"


XML = {"content-type": "application/xml"}
CSV = {"content-type": "text/csv"}

# ------------------------------------------------------------------------------------ shared data

# In this order: the later Snippet1 documents of account 0002:FR23342 are conflicts or corrections.
UBL_EXPECTED: list[tuple[str, int, str, dict[str, Any]]] = [
    (
        "peppol-base-example.xml",
        202,
        "accepted",
        {"type": "ar.invoice.issued", "currency": "EUR", "amount_minor": 165625, "due_date": "2017-12-01"},
    ),
    (
        "peppol-base-creditnote-correction.xml",
        202,
        "accepted",
        {"type": "ar.credit_note.issued", "amount_minor": 165625, "invoice_id": "0002:FR23342/Snippet1"},
    ),
    (
        "peppol-base-negative-inv-correction.xml",
        202,
        "accepted",
        {"type": "ar.credit_note.issued", "amount_minor": 165625, "invoice_id": "0002:FR23342/Snippet1"},
    ),
    ("peppol-snippet-direct-debit.xml", 409, "conflict", {}),
    ("peppol-snippet-payment1.xml", 409, "conflict", {}),
    (
        "peppol-Allowance-example.xml",
        202,
        "accepted",
        {"type": "ar.invoice.issued", "currency": "EUR", "amount_minor": 612500, "account_id": "0002:4598375937"},
    ),
    (
        "peppol-vat-category-O.xml",
        202,
        "accepted",
        {"type": "ar.invoice.issued", "currency": "SEK", "amount_minor": 320000, "due_date": "2018-09-29"},
    ),
    (
        "peppol-vat-category-Z.xml",
        202,
        "accepted",
        {"type": "ar.invoice.issued", "currency": "GBP", "amount_minor": 120000, "due_date": "2018-09-29"},
    ),
    (
        "en16931-ubl-tc434-creditnote1.xml",
        202,
        "accepted",
        {"type": "ar.credit_note.issued", "currency": "EUR", "amount_minor": 10011},
    ),
    (
        "en16931-ubl-tc434-example2.xml",
        202,
        "accepted",
        {"type": "ar.invoice.issued", "currency": "NOK", "amount_minor": 80178, "due_date": "2013-07-20"},
    ),
    (
        "en16931-ubl-tc434-example5.xml",
        202,
        "accepted",
        {"type": "ar.invoice.issued", "currency": "DKK", "amount_minor": 233750, "due_date": "2013-05-10"},
    ),
]


async def test_every_shared_ubl_file_ingests(client: httpx.AsyncClient, shared_data: Path) -> None:
    files = sorted(p.name for p in (shared_data / "ubl").glob("*.xml"))
    assert sorted(name for name, *_ in UBL_EXPECTED) == files
    for name, status, outcome, expect in UBL_EXPECTED:
        body = (shared_data / "ubl" / name).read_bytes()
        response = await client.post("/v1/invoices/ubl", content=body, headers=XML)
        assert response.status_code == status, (name, response.text)
        out = response.json()
        assert out["items"][0]["status"] == outcome, name
        if outcome == "conflict":
            assert out["conflicts"] == 1
            continue
        event_id = out["items"][0]["id"]
        rows = await ledger(client, None)
        matching = [e for e in rows if e["id"] == event_id]
        assert len(matching) == 1, (event_id, rows)
        event = matching[0]
        assert event["type"] == expect.pop("type")
        for field, value in expect.items():
            assert event["data"][field] == value, (name, field)
        again = await client.post("/v1/invoices/ubl", content=body, headers=XML)
        assert again.status_code == 200, name
        assert again.json()["duplicates"] == 1


CAMT_EXPECTED: dict[str, list[tuple[str, str | None, int | None, str | None]]] = {
    # file: [(status, type, amount_minor, reference)] per transaction
    "genkgo-camt053.v2.minimal.xml": [("accepted", "ar.payment.received", 885, "4654654654654654")],
    "genkgo-camt053.v2.multi.statement.xml": [
        ("accepted", "ar.payment.received", 885, "Transaction Description 1"),
        ("ignored", None, None, None),
    ],
    "genkgo-camt053.v8.xml": [("accepted", "ar.payment.received", 885, "4654654654654654")],
    "genkgo-camt054.v2.xml": [("ignored", None, None, None)] * 3,
    "genkgo-camt054.v8.xml": [
        ("accepted", "ar.payment.received", 310, "ISR ref number V1 Unstructured Remittance Information V1"),
        ("accepted", "ar.payment.received", 320, "ISR ref number V2"),
        ("accepted", "ar.payment.received", 320, None),
    ],
    "oca-test-camt053-txdtls.xml": [
        ("accepted", "ar.payment.received", 218700, "302388292000011111111111111"),
        ("accepted", "ar.payment.received", 129600, "302388292000022222222222222"),
    ],
    "oca-test-camt053.xml": [
        ("ignored", None, None, None),
        ("accepted", "ar.payment.reversed", None, None),
        ("accepted", "ar.payment.reversed", None, None),
        ("accepted", "ar.payment.received", 140531, "#RD PARTY MEDIA CUSNO 90782 4210773"),
    ],
    "oca-test-camt054.xml": [("accepted", "ar.payment.received", 500, "000000000000000000000000003")],
}


async def test_every_shared_camt_file_ingests(client: httpx.AsyncClient, shared_data: Path) -> None:
    files = sorted(p.name for p in (shared_data / "camt").glob("*.xml"))
    assert sorted(CAMT_EXPECTED) == files
    for name, expected in CAMT_EXPECTED.items():
        account = acct()
        body = (shared_data / "camt" / name).read_bytes()
        response = await client.post(f"/v1/payments/camt?account_id={account}", content=body, headers=XML)
        assert response.status_code == 200, (name, response.text)
        out = response.json()
        assert [i["status"] for i in out["items"]] == [e[0] for e in expected], (name, out["items"])
        events = {e["id"]: e for e in await ledger(client, account)}
        for item, (_, type_, amount, reference) in zip(out["items"], expected, strict=True):
            if type_ is None:
                continue
            event = events[item["id"]]
            assert event["type"] == type_, name
            if type_ == "ar.payment.reversed":
                assert event["data"]["reason"] == "bank return, reason code AC06"
                continue
            assert event["data"]["amount_minor"] == amount, name
            if reference is not None:
                assert event["data"]["reference"] == reference, name
        imported = await client.get(f"/v1/imports/{out['import_id']}")
        assert imported.status_code == 200
        assert imported.json()["accepted"] == out["accepted"]


async def test_ibm_receivables_csv_imports(client: httpx.AsyncClient, shared_data: Path) -> None:
    body = (shared_data / "ar" / "WA_Fn-UseC_-Accounts-Receivable.csv").read_bytes()
    response = await client.post("/v1/imports/csv?currency=USD&filename=ibm.csv", content=body, headers=CSV)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["rejected"] == 0
    assert out["accepted"] == 2 * 2466  # an invoice and its settlement per row
    first = [e for e in await ledger(client, "0379-NEVHP") if e["data"].get("invoice_number") == "0000611365"]
    assert first[0]["data"]["amount_minor"] == 5594
    assert first[0]["data"]["issue_date"] == "2013-01-02"
    assert first[0]["data"]["due_date"] == "2013-02-01"
    again = await client.post("/v1/imports/csv?currency=USD", content=body, headers=CSV)
    assert again.json()["duplicates"] == 2 * 2466
    assert again.json()["accepted"] == 0


# ------------------------------------------------------------------------------- hand fixtures


async def test_ubl_conflict_duplicate_and_rejections(client: httpx.AsyncClient) -> None:
    account = f"{uuid.uuid4().int % 10**12}"
    first = await client.post("/v1/invoices/ubl", content=ubl(account=account, total="50.00"), headers=XML)
    assert first.status_code == 202, first.text
    same = await client.post("/v1/invoices/ubl", content=ubl(account=account, total="50.00"), headers=XML)
    assert same.status_code == 200
    assert same.json()["items"][0]["status"] == "duplicate"
    other = await client.post("/v1/invoices/ubl", content=ubl(account=account, total="75.00"), headers=XML)
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    events = await ledger(client, f"0088:{account}")
    assert [e["data"]["amount_minor"] for e in events] == [5000]

    bad = await client.post("/v1/invoices/ubl", content=ubl(account=account, currency="JPY", total="1.5"), headers=XML)
    assert bad.status_code == 422
    assert bad.json()["items"][0]["errors"][0]["field"] == "cac:LegalMonetaryTotal/cbc:PayableAmount"
    imported = await client.get(f"/v1/imports/{bad.json()['import_id']}")
    assert imported.json()["rejected"] == 1


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_xml_gets_400_problem(client: httpx.AsyncClient, name: str) -> None:
    for path in ("/v1/invoices/ubl", "/v1/payments/camt"):
        response = await client.post(path, content=HOSTILE[name], headers=XML)
        assert response.status_code == 400
        assert response.json()["type"].endswith("hostile-xml")


async def test_wrong_content_type_and_not_a_document(client: httpx.AsyncClient) -> None:
    assert (
        await client.post("/v1/invoices/ubl", content=b"{}", headers={"content-type": "application/json"})
    ).status_code == 415
    not_ubl = await client.post("/v1/invoices/ubl", content=b"<Order xmlns='urn:x'/>", headers=XML)
    assert not_ubl.status_code == 422
    assert not_ubl.json()["type"].endswith("not-ubl")
    assert (await client.get(f"/v1/imports/{uuid.uuid4()}")).status_code == 404


async def test_camt_finds_the_account_from_the_invoice_number(client: httpx.AsyncClient) -> None:
    account = acct()
    number = f"INV{uuid.uuid4().int % 10**9}"
    csv = f"account_id,invoice_number,issue_date,currency,amount\n{account},{number},2026-01-10,EUR,100.00\n"
    assert (await client.post("/v1/imports/csv", content=csv.encode(), headers=CSV)).json()["accepted"] == 1
    body = CAMT.format(version="08", entries=entry(ref=number, e2e=f"E2E-{number}") + entry(ref="nothing", e2e="X9"))
    out = (await client.post("/v1/payments/camt", content=body.encode(), headers=XML)).json()
    assert [i["status"] for i in out["items"]] == ["accepted", "rejected"]
    assert "account_id" in out["items"][1]["errors"][0]["message"]
    payments = [e for e in await ledger(client, account) if e["type"] == "ar.payment.received"]
    assert payments[0]["data"]["amount_minor"] == 10000
    assert payments[0]["data"]["reference"] == number


async def test_csv_per_row_errors_are_kept_with_the_import(client: httpx.AsyncClient) -> None:
    account = acct()
    csv = (
        "account_id,invoice_number,issue_date,due_date,currency,amount\n"
        f"{account},A-1,2026-01-10,2026-02-09,EUR,10.00\n"
        f"{account},A-2,2026-01-10,2026-01-01,EUR,10.00\n"
        f"{account},A-3,2026-01-10,,JPY,10.5\n"
        f"{account},A-1,2026-01-11,,EUR,99.00\n"
    )
    out = (await client.post("/v1/imports/csv", content=csv.encode(), headers=CSV)).json()
    assert [i["status"] for i in out["items"]] == ["accepted", "rejected", "rejected", "conflict"]
    got = (await client.get(f"/v1/imports/{out['import_id']}")).json()
    assert (got["accepted"], got["rejected"], got["conflicts"]) == (1, 2, 1)
    assert got["items"][1]["errors"][0]["field"] == "data"
    assert "due_date" in got["items"][1]["errors"][0]["message"]
    assert got["items"][2]["index"] == 4
    malformed = await client.post("/v1/imports/csv", content=b"just,a,header\n", headers=CSV)
    assert malformed.status_code == 422
    assert malformed.json()["type"].endswith("malformed-csv")


# ---------------------------------------------------------------------------------------- security


async def _key(client: httpx.AsyncClient, source: str, *, signing: bool = False) -> CreatedKey:
    runtime: Runtime = client.app_runtime  # type: ignore[attr-defined]
    async with runtime.sessionmaker() as session, session.begin():
        return await ApiKeyService().create(session, source=source, name="test", signing=signing, at=NOW)


def cloud_event(source: str, account: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": source,
        "type": "ar.invoice.adjusted",
        "time": "2026-03-01T12:00:00Z",
        "data": {"invoice_id": "I-1", "account_id": account, "amount_minor": 100, "reason": "fix"},
    }


async def test_api_keys_are_required_hashed_and_per_source(secure: httpx.AsyncClient, ingest_db: str) -> None:
    account = acct()
    none = await secure.post("/v1/events", json=cloud_event("erp-a", account))
    assert none.status_code == 401
    assert none.headers["www-authenticate"] == "Bearer"
    assert none.json()["type"].endswith("unauthorized")
    bogus = await secure.post("/v1/events", json=cloud_event("erp-a", account), headers={"x-api-key": "ark_x_y"})
    assert bogus.status_code == 401

    key = await _key(secure, "erp-a")
    auth = {"authorization": f"Bearer {key.api_key}"}
    assert (await secure.post("/v1/events", json=cloud_event("erp-a", account), headers=auth)).status_code == 202
    sub = cloud_event("erp-a/eu", account)
    assert (await secure.post("/v1/events", json=sub, headers={"x-api-key": key.api_key})).status_code == 202
    other = await secure.post("/v1/events", json=cloud_event("erp-b", account), headers=auth)
    assert other.status_code == 403
    batch = await secure.post(
        "/v1/events", json=[cloud_event("erp-a", account), cloud_event("erp-b", account)], headers=auth
    )
    assert [i["status"] for i in batch.json()["items"]] == ["accepted", "forbidden"]

    runtime: Runtime = secure.app_runtime  # type: ignore[attr-defined]
    async with runtime.sessionmaker() as session:
        from arrears_ingest.models import api_keys

        stored = (await session.execute(select(api_keys).where(api_keys.c.key_id == key.key_id))).one()
    assert key.api_key.split("_", 2)[2] not in str(tuple(stored))

    async with runtime.sessionmaker() as session, session.begin():
        assert await ApiKeyService().revoke(session, key.key_id, NOW)
    assert (await secure.post("/v1/events", json=cloud_event("erp-a", account), headers=auth)).status_code == 401


async def test_hmac_signatures(secure: httpx.AsyncClient) -> None:
    key = await _key(secure, "webhook", signing=True)
    assert key.signing_secret is not None
    account = acct()
    body = orjson.dumps(cloud_event("webhook", account))
    t = int(NOW.timestamp())
    headers = {"content-type": "application/json", "x-api-key": key.api_key}
    unsigned = await secure.post("/v1/events", content=body, headers=headers)
    assert unsigned.status_code == 401
    assert "X-Arrears-Signature" in unsigned.json()["detail"]
    signed = {**headers, "x-arrears-signature": sign(key.signing_secret, t, body)}
    assert (await secure.post("/v1/events", content=body, headers=signed)).status_code == 202
    tampered = body.replace(b'"amount_minor":100', b'"amount_minor":999')
    assert (await secure.post("/v1/events", content=tampered, headers=signed)).status_code == 401
    stale = {**headers, "x-arrears-signature": sign(key.signing_secret, t - 3600, body)}
    assert (await secure.post("/v1/events", content=body, headers=stale)).status_code == 401
    webhook_only = {
        "content-type": "application/json",
        "x-arrears-key-id": key.key_id,
        "x-arrears-signature": sign(key.signing_secret, t, orjson.dumps(cloud_event("webhook", account))),
    }
    second = orjson.dumps(cloud_event("webhook", account))
    webhook_only["x-arrears-signature"] = sign(key.signing_secret, t, second)
    assert (await secure.post("/v1/events", content=second, headers=webhook_only)).status_code == 202


async def test_request_size_limit(secure: httpx.AsyncClient) -> None:
    big = b"<x>" + b"a" * (70 * 1024) + b"</x>"
    response = await secure.post("/v1/invoices/ubl", content=big, headers=XML)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def test_keys_cli_creates_lists_and_revokes(ingest_db: str, broker: str) -> None:
    from arrears_dev.stack import StackPorts, service_env
    from tests.conftest import run_cli

    env = service_env(ingest_db, StackPorts(broker=int(broker.rsplit(":", 1)[1])))
    created = run_cli("arrears_ingest.main", "keys", "create", "--source", "erp-cli", "--name", "ops", env=env)
    assert created.returncode == 0, created.stderr
    lines = dict(line.split(": ", 1) for line in created.stdout.splitlines())
    assert lines["api_key"].startswith("ark_")
    listed = run_cli("arrears_ingest.main", "keys", "list", env=env)
    assert lines["key_id"] in listed.stdout
    assert lines["api_key"] not in listed.stdout
    revoked = run_cli("arrears_ingest.main", "keys", "revoke", lines["key_id"], env=env)
    assert revoked.returncode == 0
    assert "revoked" in run_cli("arrears_ingest.main", "keys", "list", env=env).stdout


async def test_openapi_lists_every_ingest_endpoint(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in ("/v1/events", "/v1/invoices/ubl", "/v1/payments/camt", "/v1/imports/csv", "/v1/imports/{import_id}"):
        assert path in spec["paths"], path
    assert "application/xml" in spec["paths"]["/v1/invoices/ubl"]["post"]["requestBody"]["content"]


async def test_account_default_terms_set_the_missing_due_date(client: httpx.AsyncClient) -> None:
    account = f"{uuid.uuid4().int % 10**12}"
    assert (await client.get(f"/v1/accounts/0088:{account}/terms")).status_code == 404
    assert (await client.put(f"/v1/accounts/0088:{account}/terms", json={"days": 400})).status_code == 422
    put = await client.put(f"/v1/accounts/0088:{account}/terms", json={"days": 14})
    assert put.json() == {"account_id": f"0088:{account}", "days": 14}
    no_due = await client.post("/v1/invoices/ubl", content=ubl(account=account, due=None), headers=XML)
    assert no_due.status_code == 202
    stated = await client.post(
        "/v1/invoices/ubl", content=ubl(number="INV-2", account=account, due=None, terms="Net 45"), headers=XML
    )
    assert stated.status_code == 202
    due = {e["data"]["invoice_number"]: e["data"]["due_date"] for e in await ledger(client, f"0088:{account}")}
    assert due == {"INV-1": "2026-01-24", "INV-2": "2026-02-24"}
    csv = f"account_id,invoice_number,issue_date,currency,amount\n0088:{account},C-1,2026-03-01,EUR,5.00\n"
    assert (await client.post("/v1/imports/csv", content=csv.encode(), headers=CSV)).json()["accepted"] == 1
    rows = await ledger(client, f"0088:{account}")
    assert [e["data"]["due_date"] for e in rows if e["data"]["invoice_number"] == "C-1"] == ["2026-03-15"]
