"""Events in, ledger documents out; stored documents in, :class:`Documents` out.

Both directions are pure, so the service (through the database) and the property tests (through
a dict) apply exactly the same rules. A document is keyed by (kind, doc_id). ``newest_wins``
documents (the customer, a dispute's status) keep the one with the latest event time, ties to
the larger event id; all others keep the first copy, so redelivery changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from arrears_scoring.ledger.compute import Adjustment, Documents
from arrears_shared.events.v1 import (
    CaseEvent,
    CreditNoteIssued,
    Customer,
    InvoiceAdjusted,
    InvoiceCancelled,
    InvoiceIssued,
    PaymentReceived,
    PaymentReversed,
)


@dataclass(frozen=True)
class DocRow:
    kind: str
    doc_id: str
    data: dict[str, Any]
    at: datetime
    ref_id: str | None = None
    newest_wins: bool = False


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def ledger_rows(event_id: str, at: datetime, data: BaseModel) -> list[DocRow]:
    """The documents one canonical ledger event stands for."""
    match data:
        case Customer():
            return [DocRow("customer", data.account_id, _dump(data), at, newest_wins=True)]
        case InvoiceIssued():
            rows = [DocRow("invoice", data.invoice_id, _dump(data), at)]
            if data.customer is not None:
                rows.append(DocRow("customer", data.account_id, _dump(data.customer), at, newest_wins=True))
            return rows
        case InvoiceAdjusted():
            return [DocRow("adjustment", event_id, _dump(data), at, ref_id=data.invoice_id)]
        case InvoiceCancelled():
            return [DocRow("cancellation", data.invoice_id, _dump(data), at, ref_id=data.invoice_id)]
        case CreditNoteIssued():
            return [DocRow("credit_note", data.credit_note_id, _dump(data), at)]
        case PaymentReceived():
            return [DocRow("payment", data.payment_id, _dump(data), at)]
        case PaymentReversed():
            return [DocRow("reversal", data.payment_id, _dump(data), at, ref_id=data.payment_id)]
    return []


def case_rows(event_id: str, event_type: str, at: datetime, data: CaseEvent) -> list[DocRow]:
    """What scoring keeps of a collections event: disputes per invoice, promises made and broken."""
    payload = _dump(data)
    promise_id = data.reference_id or event_id
    if event_type in ("collections.dispute.opened", "collections.dispute.resolved"):
        is_open = event_type == "collections.dispute.opened"
        return [
            DocRow("dispute", inv, {**payload, "open": is_open}, at, ref_id=inv, newest_wins=True)
            for inv in data.invoice_ids or []
        ]
    if event_type == "collections.promise.made":
        return [DocRow("promise", promise_id, payload, at)]
    if event_type in ("collections.promise.broken", "collections.payment_plan.installment_missed"):
        return [DocRow("promise_broken", f"{event_type}:{promise_id}:{event_id}", payload, at)]
    return []


def wins(new: DocRow, new_event_id: str, old: DocRow | None, old_event_id: str) -> bool:
    """Whether ``new`` replaces the stored ``old`` of the same key (mirrors the repository's upsert)."""
    if old is None:
        return True
    if not new.newest_wins:
        return False
    return (new.at, new_event_id) >= (old.at, old_event_id)


Row = tuple[str, str, str | None, dict[str, Any] | str, datetime]
"""(kind, doc_id, ref_id, data, at); ``data`` as a dict or as its JSON text (validated straight from
the text, without building the dict first)."""

_M = TypeVar("_M", bound=BaseModel)


def _model(model: type[_M], data: dict[str, Any] | str) -> _M:
    return model.model_validate_json(data) if isinstance(data, str) else model.model_validate(data)


def _fields(data: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(data, str):
        loaded: dict[str, Any] = orjson.loads(data)
        return loaded
    return data


def from_rows(rows: Iterable[Row]) -> tuple[Customer | None, Documents]:
    """Rows of (kind, doc_id, ref_id, data, at) → the customer and the account's documents."""
    docs = Documents()
    customer: Customer | None = None
    for kind, doc_id, ref_id, data, at in rows:
        if kind == "customer":
            customer = _model(Customer, data)
        elif kind == "invoice":
            docs.invoices[doc_id] = _model(InvoiceIssued, data)
        elif kind == "adjustment" and ref_id is not None:
            docs.adjustments.append(Adjustment(ref_id, int(_fields(data)["amount_minor"]), at, doc_id))
        elif kind == "cancellation" and ref_id is not None:
            docs.cancelled.add(ref_id)
        elif kind == "credit_note":
            docs.credit_notes[doc_id] = _model(CreditNoteIssued, data)
        elif kind == "payment":
            docs.payments[doc_id] = _model(PaymentReceived, data)
        elif kind == "reversal" and ref_id is not None:
            docs.reversed[ref_id] = at
        elif kind == "dispute" and ref_id is not None:
            docs.ever_disputed.add(ref_id)
            if _fields(data).get("open", True):
                docs.disputed.add(ref_id)
        elif kind == "promise":
            docs.promises.add(doc_id)
        elif kind == "promise_broken":
            docs.broken_promises.add(doc_id)
    return customer, docs
