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
from arrears_shared.events.envelope import CloudEvent, typed_envelope
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


@dataclass(slots=True)
class _Valid:
    """A valid event, reduced to what the checks and the outbox need (its JSON built once)."""

    index: int
    source: str
    id: str
    type: str
    account_id: str
    digest: str
    payload: bytes
    claim: tuple[str, str, str] | None  # (account_id, invoice_number, invoice_id) of an invoice


# The envelope with ``data`` typed as its type's model: envelope and payload validated in one call.
_TYPED: dict[str, type[CloudEvent]] = {t: typed_envelope(m) for t, m in LEDGER_MODELS.items()}


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
    return _digest_data(event.data)


def _digest_data(data: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def judge_event(index: int, raw: Any) -> _Valid | list[dict[str, str]]:
    """:func:`validate_event`, reduced to what :meth:`IngestService.accept` needs, on a fast path.

    A valid event is validated once, envelope and payload together, and dumped once: the outbox
    payload is exactly the normalized event's JSON (``CloudEvent.to_json``) and the digest the same
    as :func:`_digest` of it. Anything the fast path refuses is judged again by
    :func:`validate_event`, so the reasons given for an invalid event do not change.
    """
    type_ = raw.get("type") if isinstance(raw, dict) else None
    typed = _TYPED.get(type_) if isinstance(type_, str) else None
    if typed is None:
        return _slow(index, raw)
    try:
        event = typed.model_validate(raw)
    except ValidationError:
        return _slow(index, raw)
    data: Any = event.data
    account_id: str = data.account_id
    claim = (account_id, data.invoice_number, data.invoice_id) if isinstance(data, InvoiceIssued) else None
    if (
        "\x00" in event.id
        or "\x00" in event.source
        or (claim is not None and "\x00" in claim[1])
        or (event.subject is not None and event.subject != account_id)
    ):
        return _slow(index, raw)
    if event.subject is None:
        event = event.model_copy(update={"subject": account_id})
    # pydantic writes the JSON itself (the same bytes as orjson of the "json" dump, without building the
    # dump); the digest needs only the data's dump.
    return _Valid(
        index,
        event.source,
        event.id,
        event.type,
        account_id,
        # (the serializer called directly: model_dump's own Python wrapper cost a third of the dump)
        _digest_data(data.__pydantic_serializer__.to_python(data, mode="json", exclude_none=True)),
        event.__pydantic_serializer__.to_json(event, exclude_none=True),
        claim,
    )


def _slow(index: int, raw: Any) -> _Valid | list[dict[str, str]]:
    outcome = validate_event(raw)
    if isinstance(outcome, list):
        return outcome
    event, data = outcome
    assert event.subject is not None
    claim = (event.subject, data.invoice_number, data.invoice_id) if isinstance(data, InvoiceIssued) else None
    return _Valid(index, event.source, event.id, event.type, event.subject, _digest(event), event.to_json(), claim)


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
            outcome = judge_event(index, raw)
            if isinstance(outcome, list):
                raw_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
                results[index] = ItemResult(index, raw_id, "rejected", outcome)
                continue
            v = outcome
            if allowed_source is not None and not source_allowed(v.source, allowed_source):
                results[index] = ItemResult(
                    index,
                    v.id,
                    "forbidden",
                    [{"field": "source", "message": f"this API key may only send events of source {allowed_source}"}],
                )
                continue
            key = (v.source, v.id)
            if key in seen:
                if seen[key] == v.digest:
                    results[index] = ItemResult(index, v.id, "duplicate")
                else:
                    results[index] = ItemResult(
                        index,
                        v.id,
                        "conflict",
                        [{"field": "id", "message": "this source and id come twice in the batch with different data"}],
                    )
                continue
            seen[key] = v.digest
            valid.append(v)

        # The usual batch: every key and every invoice number new, recorded by plain inserts in one
        # savepoint. Otherwise (anything there before) nothing of that was written, and the batch is
        # sorted out key by key.
        all_new = bool(valid) and await self.repository.record_all_new(
            session, valid, [v.claim for v in valid if v.claim]
        )
        fresh = set() if all_new else await self.repository.record_received(session, valid)
        if all_new or len(fresh) == len(valid):  # every key was new: nothing to sort out
            new, old = valid, []
        else:
            new = [v for v in valid if (v.source, v.id) in fresh]
            old = [v for v in valid if (v.source, v.id) not in fresh]
        recorded = await self.repository.digests(session, [(v.source, v.id) for v in old])
        for v in old:
            if recorded.get((v.source, v.id)) in (None, v.digest):
                results[v.index] = ItemResult(v.index, v.id, "duplicate")
            else:
                results[v.index] = ItemResult(
                    v.index,
                    v.id,
                    "conflict",
                    [{"field": "id", "message": "this source and id were accepted before with different data"}],
                )

        conflicts = (
            {} if all_new else await self.repository.claim_invoice_numbers(session, [v.claim for v in new if v.claim])
        )
        accepted: list[_Valid] = []
        refused: list[tuple[str, str]] = []
        for v in new:
            if v.claim is not None and v.claim in conflicts:
                owner = conflicts[v.claim]
                results[v.index] = ItemResult(
                    v.index,
                    v.id,
                    "conflict",
                    [
                        {
                            "field": "data.invoice_number",
                            "message": f"invoice number already belongs to invoice {owner} of this account",
                        }
                    ],
                )
                refused.append((v.source, v.id))
            else:
                accepted.append(v)
                results[v.index] = ItemResult(v.index, v.id, "accepted")
        await self.repository.forget_received(session, refused)
        await self.outbox.copy_payloads(session, [(LEDGER, v.account_id, v.payload) for v in accepted])
        return [r for r in results if r is not None]
