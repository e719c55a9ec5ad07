"""The fast path that judges an event (one validation, one dump) agrees with the reference path.

The reference is :func:`validate_event` followed by ``to_json`` and :func:`_digest`, as ingest did before:
a valid event's outbox payload and digest must be byte for byte the same (stored digests of events
accepted before must still match a re-sent event), and an invalid event must get the same reasons.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from arrears_ingest.events.service import _digest, _slow, judge_event, validate_event


def envelope(type_: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "erp/test",
        "type": type_,
        "time": "2026-03-02T11:00:00+01:00",
        "subject": data.get("account_id"),
        "data": data,
    }
    event.update(extra)
    return event


INVOICE = {
    "invoice_id": "INV-1",
    "invoice_number": "2026-0001",
    "account_id": "ACC-1",
    "issue_date": "2026-03-01",
    "due_date": "2026-03-31",
    "currency": "EUR",
    "amount_minor": 12345,
}

VALID: list[dict[str, Any]] = [
    envelope("ar.invoice.issued", INVOICE),
    envelope(
        "ar.invoice.issued",
        {
            **INVOICE,
            "tax_minor": 2000,
            "purchase_order": "PO-7",
            "terms": {"code": "NET30", "late_fee_percent": "1.5", "early_discount_days": 10},
            "customer": {
                "account_id": "ACC-1",
                "name": "Zoë Ünal",
                "email": "billing@example.com",
                "country": "DE",
                "timezone": "Europe/Berlin",
                "consent": {"email": True, "sms": False},
            },
        },
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ),
    envelope("ar.invoice.issued", INVOICE, subject=None),
    {k: v for k, v in envelope("ar.invoice.issued", INVOICE).items() if k != "subject"},
    envelope(
        "ar.payment.received",
        {
            "payment_id": "PAY-1",
            "account_id": "ACC-1",
            "currency": "EUR",
            "amount_minor": 5000,
            "received_at": "2026-03-02T10:00:00-05:00",
            "reference": "2026-0001",
            "allocations": [{"invoice_id": "INV-1", "amount_minor": 5000}],
        },
        datacontenttype="application/json",
    ),
    envelope("ar.payment.reversed", {"payment_id": "PAY-1", "account_id": "ACC-1", "reason": "bounced"}),
    envelope("ar.invoice.adjusted", {"invoice_id": "INV-1", "account_id": "ACC-1", "amount_minor": 0, "reason": "x"}),
    envelope("ar.invoice.cancelled", {"invoice_id": "INV-1", "account_id": "ACC-1", "reason": "void"}),
    envelope(
        "ar.credit_note.issued",
        {"credit_note_id": "CN-1", "account_id": "ACC-1", "currency": "JPY", "amount_minor": 300},
    ),
    envelope(
        "ar.customer.upserted",
        {"account_id": "ACC-1", "name": "Acme", "country": "CH", "timezone": "Europe/Zurich", "language": "de-CH"},
    ),
]


@pytest.mark.parametrize("raw", VALID, ids=lambda raw: f"{raw['type']}-{raw.get('subject', 'absent')}")
def test_a_valid_event_gets_the_reference_payload_and_digest(raw: dict[str, Any]) -> None:
    outcome = validate_event(copy.deepcopy(raw))
    assert not isinstance(outcome, list), outcome
    event, _ = outcome
    fast = judge_event(3, copy.deepcopy(raw))
    assert not isinstance(fast, list), fast
    assert fast.payload == event.to_json()
    assert fast.digest == _digest(event)
    assert (fast.index, fast.source, fast.id, fast.type, fast.account_id) == (
        3,
        event.source,
        event.id,
        event.type,
        event.subject,
    )
    assert orjson.loads(fast.payload)["subject"] == raw["data"]["account_id"]
    slow = _slow(3, copy.deepcopy(raw))
    assert slow == fast


def _broken() -> list[Any]:
    base = envelope("ar.invoice.issued", INVOICE)
    return [
        "not an object",
        [base],
        {**base, "type": "ar.unknown"},
        {**base, "type": ["ar.invoice.issued"]},
        {**base, "specversion": "0.3"},
        {**base, "time": "2026-03-02T10:00:00"},
        {**base, "subject": "ACC-2"},
        {**base, "id": "a\x00b"},
        {**base, "BadExt": "x"},
        {**base, "specversion": "0.3", "data": {**INVOICE, "amount_minor": -1}},
        {**base, "data": {**INVOICE, "due_date": "2026-02-01"}},
        {**base, "data": {**INVOICE, "invoice_number": "n\x00"}},
        {**base, "data": {**INVOICE, "amount_minor": 1.5, "currency": "XXX"}},
        {**base, "data": {**INVOICE, "surprise": 1}},
        {k: v for k, v in base.items() if k != "data"},
    ]


@pytest.mark.parametrize("raw", _broken())
def test_an_invalid_event_gets_the_reference_reasons(raw: Any) -> None:
    expected = validate_event(copy.deepcopy(raw))
    assert isinstance(expected, list) and expected
    assert judge_event(0, copy.deepcopy(raw)) == expected
