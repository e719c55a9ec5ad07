"""The case API over HTTP (in-process ASGI, real PostgreSQL): keys and scopes, the state machine's
409s, ETag / If-Match, Idempotency-Key, the worklist and reports."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from arrears_case_manager.auth import KeyService
from arrears_case_manager.cases import endpoints
from arrears_case_manager.cases.actions import CaseActions
from arrears_case_manager.models import timeline
from arrears_shared.clock import FixedClock
from arrears_shared.db import make_sessionmaker
from arrears_shared.http import install_problem_handlers
from tests.case_manager.helpers import account_state, make_service, noon
from tests.conftest import run_cli

TODAY = date(2026, 5, 20)


@pytest.fixture(scope="module")
async def api(engine: AsyncEngine) -> AsyncIterator[SimpleNamespace]:
    clock = FixedClock(noon(TODAY))
    service = make_service(clock)
    app = FastAPI()
    sessionmaker = make_sessionmaker(engine)
    app.state.runtime = SimpleNamespace(sessionmaker=sessionmaker)
    app.state.settings = SimpleNamespace(auth_required=True)
    app.state.case_service = service
    app.state.case_actions = CaseActions(service)
    app.state.key_service = KeyService()
    install_problem_handlers(app)
    app.include_router(endpoints.router)
    tokens: dict[str, str] = {}
    async with sessionmaker() as session, session.begin():
        for name, scopes in (("reader", ["cases:read"]), ("writer", ["cases:read", "cases:write"])):
            _, tokens[name] = await KeyService().create(session, f"test-{name}", scopes, clock.now())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cases") as client:
        yield SimpleNamespace(client=client, service=service, sessionmaker=sessionmaker, tokens=tokens, clock=clock)


def auth(api: SimpleNamespace, who: str = "writer", **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.tokens[who]}", **headers}


async def open_case(api: SimpleNamespace, days_overdue: int = 10, amount: int = 10_000, **kw: Any) -> dict[str, Any]:
    acc = f"API-{uuid.uuid4().hex[:10]}"
    state = account_state(acc, today=TODAY, invoices=[("I1", TODAY - timedelta(days=days_overdue), amount)], **kw)
    async with api.sessionmaker() as session, session.begin():
        await api.service.on_account_updated(session, None, state)
    r = await api.client.get(f"/v1/accounts/{acc}/case", headers=auth(api, "reader"))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


async def test_bearer_keys_and_scopes(api: SimpleNamespace) -> None:
    case = await open_case(api)
    url = f"/v1/cases/{case['case_id']}"
    r = await api.client.get(url)
    assert problem(r, 401)["detail"].startswith("a bearer API key is required")
    assert r.headers["www-authenticate"].startswith("Bearer")
    problem(await api.client.get(url, headers={"Authorization": "Bearer ak_nope_secret"}), 401)
    wrong_secret = api.tokens["reader"].rsplit("_", 1)[0] + "_x"
    problem(await api.client.get(url, headers={"Authorization": f"Bearer {wrong_secret}"}), 401)
    assert (await api.client.get(url, headers=auth(api, "reader"))).status_code == 200
    r = await api.client.post(f"{url}/notes", json={"text": "called"}, headers=auth(api, "reader"))
    assert "cases:write" in problem(r, 403)["detail"]


async def test_keys_are_hashed_at_rest_and_made_by_the_cli(api: SimpleNamespace, database_url: str) -> None:
    env = {**os.environ, "ARREARS_DATABASE_URL": database_url}
    out = run_cli("arrears_case_manager.cli", "keys", "create", "--name", "console", "--scope", "cases:read", env=env)
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    case = await open_case(api)
    r = await api.client.get(f"/v1/cases/{case['case_id']}", headers={"Authorization": f"Bearer {created['token']}"})
    assert r.status_code == 200
    async with api.sessionmaker() as session:
        from arrears_case_manager.models import api_keys

        row = (await session.execute(select(api_keys).where(api_keys.c.key_id == created["key_id"]))).one()
    assert created["token"].rsplit("_", 1)[1] not in row.secret_hash
    assert len(row.secret_hash) == 64
    bad = run_cli("arrears_case_manager.cli", "keys", "create", "--name", "x", "--scope", "root", env=env)
    assert bad.returncode == 2
    revoked = run_cli("arrears_case_manager.cli", "keys", "revoke", created["key_id"], env=env)
    assert revoked.returncode == 0, revoked.stderr
    r = await api.client.get(f"/v1/cases/{case['case_id']}", headers={"Authorization": f"Bearer {created['token']}"})
    assert r.status_code == 401


async def test_writes_record_who_and_enforce_the_state_machine(api: SimpleNamespace) -> None:
    case = await open_case(api)
    cid = case["case_id"]
    r = await api.client.post(f"/v1/cases/{cid}/resume", json={"reason": "x"}, headers=auth(api))
    body = problem(r, 409)
    assert "cannot resume a case that is open" in body["detail"]
    r = await api.client.post(f"/v1/cases/{cid}/assign", json={"assignee": "collector-7"}, headers=auth(api))
    assert r.status_code == 200, r.text
    assert r.json()["assignee"] == "collector-7"
    r = await api.client.post(
        f"/v1/cases/{cid}/disputes", json={"invoice_ids": ["I1"], "reason": "goods damaged"}, headers=auth(api)
    )
    assert r.status_code == 201, r.text
    dispute_id = r.json()["dispute_id"]
    assert r.json()["status"] == "disputed"
    problem(
        await api.client.post(
            f"/v1/cases/{cid}/promises",
            json={"currency": "EUR", "amount_minor": 100, "date": TODAY.isoformat()},
            headers=auth(api),
        ),
        409,
    )
    r = await api.client.post(
        f"/v1/cases/{cid}/disputes/{dispute_id}/resolve", json={"outcome": "rejected"}, headers=auth(api)
    )
    assert r.json()["status"] == "open"
    problem(
        await api.client.post(
            f"/v1/cases/{cid}/disputes", json={"invoice_ids": ["NOPE"], "reason": "x"}, headers=auth(api)
        ),
        422,
    )
    problem(
        await api.client.post(
            f"/v1/cases/{cid}/promises",
            json={"currency": "EUR", "amount_minor": 999_999, "date": TODAY.isoformat()},
            headers=auth(api),
        ),
        422,
    )
    problem(
        await api.client.post(
            f"/v1/cases/{cid}/promises", json={"currency": "EUR", "amount_minor": 1.5, "date": "x"}, headers=auth(api)
        ),
        422,
    )
    r = await api.client.post(f"/v1/cases/{cid}/escalate", json={"reason": "agency"}, headers=auth(api))
    assert r.json()["status"] == "escalated_external"
    r = await api.client.get(f"/v1/cases/{cid}/timeline", headers=auth(api, "reader"))
    entries = r.json()["entries"]
    manual = [e for e in entries if e["kind"] in ("assigned", "dispute", "dispute_resolved", "escalate")]
    assert len(manual) == 4
    assert all(e["actor"].startswith("key:") for e in manual)
    problem(await api.client.get("/v1/cases/nope", headers=auth(api, "reader")), 404)


async def test_etag_and_if_match(api: SimpleNamespace) -> None:
    case = await open_case(api)
    cid = case["case_id"]
    r = await api.client.get(f"/v1/cases/{cid}", headers=auth(api, "reader"))
    tag = r.headers["etag"]
    r = await api.client.post(f"/v1/cases/{cid}/notes", json={"text": "first"}, headers=auth(api, **{"If-Match": tag}))
    assert r.status_code == 201, r.text
    assert r.headers["etag"] != tag
    # A second writer still holding the old ETag is refused.
    r = await api.client.post(f"/v1/cases/{cid}/notes", json={"text": "stale"}, headers=auth(api, **{"If-Match": tag}))
    body = problem(r, 412)
    assert body["current_etag"] == r.headers.get("etag", body["current_etag"])
    async with api.sessionmaker() as session:
        notes = (
            await session.execute(select(timeline.c.data).where(timeline.c.case_id == cid, timeline.c.kind == "note"))
        ).scalars()
        assert [n["text"] for n in notes] == ["first"]


async def test_idempotency_key_replays_the_first_answer(api: SimpleNamespace) -> None:
    case = await open_case(api)
    cid = case["case_id"]
    body = {"currency": "EUR", "amount_minor": 5_000, "date": (TODAY + timedelta(days=5)).isoformat()}
    headers = auth(api, **{"Idempotency-Key": "promise-1"})
    first = await api.client.post(f"/v1/cases/{cid}/promises", json=body, headers=headers)
    second = await api.client.post(f"/v1/cases/{cid}/promises", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert len(second.json()["promises"]) == 1
    other = await api.client.post(f"/v1/cases/{cid}/promises", json={**body, "amount_minor": 1}, headers=headers)
    assert problem(other, 422)["type"].endswith("idempotency-key-reused")


async def test_worklist_filters_priority_and_cursor(api: SimpleNamespace) -> None:
    tag = uuid.uuid4().hex[:6]
    made = [
        await open_case(api, amount=amount, probability=p, tier=tier, currency="CHF")
        for amount, p, tier in ((100_000, 0.9, "critical"), (500_000, 0.1, "low"), (50_000, 0.5, "medium"))
    ]
    for case in made:
        await api.client.post(f"/v1/cases/{case['case_id']}/assign", json={"assignee": tag}, headers=auth(api))
    r = await api.client.get("/v1/cases", params={"assignee": tag, "limit": 2}, headers=auth(api, "reader"))
    page = r.json()
    # priority = probability x overdue (major units) x 100: 0.9 x 1000 > 0.1 x 5000 > 0.5 x 500
    assert [c["tier"] for c in page["items"]] == ["critical", "low"]
    assert page["next_cursor"]
    r = await api.client.get(
        "/v1/cases", params={"assignee": tag, "limit": 2, "cursor": page["next_cursor"]}, headers=auth(api, "reader")
    )
    assert [c["tier"] for c in r.json()["items"]] == ["medium"]
    assert r.json()["next_cursor"] is None
    r = await api.client.get(
        "/v1/cases", params={"assignee": tag, "tier": "low", "currency": "CHF"}, headers=auth(api, "reader")
    )
    assert len(r.json()["items"]) == 1
    r = await api.client.get(
        "/v1/cases", params={"assignee": tag, "min_amount_minor": 90_000}, headers=auth(api, "reader")
    )
    assert {c["overdue_minor"] for c in r.json()["items"]} == {100_000, 500_000}
    r = await api.client.get("/v1/cases", params={"assignee": tag, "sort": "age"}, headers=auth(api, "reader"))
    assert len(r.json()["items"]) == 3
    problem(await api.client.get("/v1/cases", params={"status": "bogus"}, headers=auth(api, "reader")), 422)
    problem(await api.client.get("/v1/cases", params={"cursor": "!!"}, headers=auth(api, "reader")), 422)


async def test_reports(api: SimpleNamespace) -> None:
    await open_case(api, amount=12_345, currency="JPY")
    aging = (await api.client.get("/v1/reports/aging", headers=auth(api, "reader"))).json()
    jpy = next(c for c in aging["currencies"] if c["currency"] == "JPY")
    assert jpy["buckets"]["d1_30"] >= 12_345
    kpis = (await api.client.get("/v1/reports/kpis", headers=auth(api, "reader"))).json()
    assert kpis["cases_by_stage"]["overdue_7"] >= 1
    assert any(d["currency"] == "JPY" and d["days"] is not None for d in kpis["dso"])
    assert "promise_kept_rate" in kpis


async def test_kpis_period_parameters(api: SimpleNamespace) -> None:
    r = await api.client.get("/v1/reports/kpis", headers=auth(api, "reader"))
    assert r.json()["period"] == {"from": (TODAY - timedelta(days=89)).isoformat(), "to": TODAY.isoformat(), "days": 90}
    r = await api.client.get(
        "/v1/reports/kpis", params={"from": "2026-05-01", "to": "2026-05-20"}, headers=auth(api, "reader")
    )
    assert r.json()["period"] == {"from": "2026-05-01", "to": "2026-05-20", "days": 20}
    assert isinstance(r.json()["collection_effectiveness_index"], list)
    problem(
        await api.client.get(
            "/v1/reports/kpis", params={"from": "2026-05-21", "to": "2026-05-20"}, headers=auth(api, "reader")
        ),
        422,
    )
    problem(await api.client.get("/v1/reports/kpis", params={"from": "May"}, headers=auth(api, "reader")), 422)
