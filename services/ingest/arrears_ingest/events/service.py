"""Validate ERP events and accept them onto ar.ledger.v1, each exactly once.

Every item is judged on its own: one bad item never rejects the others. An item is
- ``accepted``: valid and new; it is written to the outbox for ``ar.ledger.v1``;
- ``duplicate``: its (source, id) was accepted before with the same data; nothing changes;
- ``conflict``: its (source, id) was accepted before with different data, or an invoice number
  of the account already belongs to another invoice; nothing changes;
- ``rejected``: invalid, with the fields and reasons (never the values).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_ingest.events.repository import EventRepository
from arrears_shared.errors import describe_validation_error
from arrears_shared.events.envelope import CloudEvent
from arrears_shared.events.v1 import LEDGER_MODELS, InvoiceIssued
from arrears_shared.messaging.outbox import Outbox
from arrears_shared.topics import LEDGER

Status = Literal["accepted", "duplicate", "conflict", "rejected", "forbidden"]


def source_allowed(source: str, allowed: str) -> bool:
    """An API key for ``allowed`` may send events whose source is it or below it (``allowed/...``)."""
    return source == allowed or source.startswith(allowed.rstrip("/") + "/")


@dataclass
class ItemResult:
    index: int
    id: str | None
    status: Status
    errors: list[dict[str, str]] = field(default_factory=list)


@dataclass
class _Valid:
    index: int
    event: CloudEvent
    data: BaseModel
    digest: str


def validate_event(raw: Any) -> tuple[CloudEvent, BaseModel] | list[dict[str, str]]:
    """An ERP event checked against the envelope and its type's model, or the list of what is wrong."""
    if not isinstance(raw, dict):
        return [{"field": "(root)", "message": "an event must be a JSON object"}]
    try:
        event = CloudEvent.model_validate(raw)
    except ValidationError as exc:
        return describe_validation_error(exc)
    model = LEDGER_MODELS.get(event.type)
    if model is None:
        known = ", ".join(sorted(LEDGER_MODELS))
        return [{"field": "type", "message": f"unknown event type; expected one of {known}"}]
    try:
        data = model.model_validate(event.data)
    except ValidationError as exc:
        return describe_validation_error(exc, ("data",))
    # PostgreSQL text cannot hold NUL: refuse it here rather than fail the whole batch's transaction.
    texts = {"id": event.id, "source": event.source, "type": event.type}
    if isinstance(data, InvoiceIssued):
        texts["data.invoice_number"] = data.invoice_number
    nul = [name for name, value in texts.items() if "\x00" in value]
    if nul:
        return [{"field": name, "message": "must not contain NUL characters"} for name in nul]
    account_id: str = data.account_id  # type: ignore[attr-defined]
    if event.subject is not None and event.subject != account_id:
        return [{"field": "subject", "message": "subject must be the account id (data.account_id)"}]
    normalized = event.model_copy(
        update={"subject": account_id, "data": data.model_dump(mode="json", exclude_none=True)}
    )
    return normalized, data


def _digest(event: CloudEvent) -> str:
    return hashlib.sha256(orjson.dumps(event.data, option=orjson.OPT_SORT_KEYS)).hexdigest()


class IngestService:
    def __init__(self, outbox: Outbox, repository: EventRepository | None = None) -> None:
        self.outbox = outbox
        self.repository = repository or EventRepository()

    async def accept(
        self, session: AsyncSession, items: list[Any], *, allowed_source: str | None = None
    ) -> list[ItemResult]:
        """Judge every item; ``allowed_source`` (an API key's source) limits the sources it may use."""
        results: list[ItemResult | None] = [None] * len(items)
        valid: list[_Valid] = []
        seen: dict[tuple[str, str], str] = {}
        for index, raw in enumerate(items):
            outcome = validate_event(raw)
            raw_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
            if isinstance(outcome, list):
                results[index] = ItemResult(index, raw_id, "rejected", outcome)
                continue
            event, data = outcome
            if allowed_source is not None and not source_allowed(event.source, allowed_source):
                results[index] = ItemResult(
                    index,
                    event.id,
                    "forbidden",
                    [{"field": "source", "message": f"this API key may only send events of source {allowed_source}"}],
                )
                continue
            key = (event.source, event.id)
            digest = _digest(event)
            if key in seen:
                if seen[key] == digest:
                    results[index] = ItemResult(index, event.id, "duplicate")
                else:
                    results[index] = ItemResult(
                        index,
                        event.id,
                        "conflict",
                        [{"field": "id", "message": "this source and id come twice in the batch with different data"}],
                    )
                continue
            seen[key] = digest
            valid.append(_Valid(index, event, data, digest))

        fresh = await self.repository.record_received(
            session,
            [
                {
                    "source": v.event.source,
                    "event_id": v.event.id,
                    "type": v.event.type,
                    "account_id": v.event.subject,
                    "digest": v.digest,
                }
                for v in valid
            ],
        )
        new = [v for v in valid if (v.event.source, v.event.id) in fresh]
        old = [v for v in valid if (v.event.source, v.event.id) not in fresh]
        recorded = await self.repository.digests(session, [(v.event.source, v.event.id) for v in old])
        for v in old:
            if recorded.get((v.event.source, v.event.id)) in (None, v.digest):
                results[v.index] = ItemResult(v.index, v.event.id, "duplicate")
            else:
                results[v.index] = ItemResult(
                    v.index,
                    v.event.id,
                    "conflict",
                    [{"field": "id", "message": "this source and id were accepted before with different data"}],
                )

        claims = [
            (v.data.account_id, v.data.invoice_number, v.data.invoice_id)
            for v in new
            if isinstance(v.data, InvoiceIssued)
        ]
        conflicts = await self.repository.claim_invoice_numbers(session, claims)
        accepted: list[_Valid] = []
        refused: list[tuple[str, str]] = []
        for v in new:
            claim = (
                (v.data.account_id, v.data.invoice_number, v.data.invoice_id)
                if isinstance(v.data, InvoiceIssued)
                else None
            )
            if claim is not None and claim in conflicts:
                owner = conflicts[claim]
                results[v.index] = ItemResult(
                    v.index,
                    v.event.id,
                    "conflict",
                    [
                        {
                            "field": "data.invoice_number",
                            "message": f"invoice number already belongs to invoice {owner} of this account",
                        }
                    ],
                )
                refused.append((v.event.source, v.event.id))
            else:
                accepted.append(v)
                results[v.index] = ItemResult(v.index, v.event.id, "accepted")
        await self.repository.forget_received(session, refused)
        await self.outbox.add_many(session, [(LEDGER, v.event) for v in accepted])
        return [r for r in results if r is not None]
