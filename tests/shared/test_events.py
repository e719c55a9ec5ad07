"""The CloudEvents envelope and the v1 payload models refuse what they cannot represent exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest
from pydantic import ValidationError

from arrears_shared.errors import describe_validation_error
from arrears_shared.events.envelope import CloudEvent, event_json, new_event
from arrears_shared.events.v1 import (
    EVENT_MODELS,
    Customer,
    InvoiceIssued,
    NotificationRequested,
    PaymentReceived,
    UnknownEventType,
    parse_data,
)


def envelope(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "erp/x",
        "type": "ar.invoice.issued",
        "time": "2026-11-01T10:00:00+01:00",
        "subject": "A-1",
        "data": invoice(),
    }
    base.update(over)
    return base


def invoice(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "invoice_id": "INV-1",
        "invoice_number": "2026-1",
        "account_id": "A-1",
        "issue_date": "2026-10-01",
        "due_date": "2026-10-31",
        "currency": "EUR",
        "amount_minor": 10000,
    }
    base.update(over)
    return base


def test_time_is_normalised_to_utc() -> None:
    ev = CloudEvent.model_validate(envelope())
    assert ev.time == datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


class _NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize(
    ("time", "utc"),
    [
        ("2026-11-01T09:00:00Z", datetime(2026, 11, 1, 9, 0, tzinfo=UTC)),
        ("2026-11-01T09:00:00+00:00", datetime(2026, 11, 1, 9, 0, tzinfo=UTC)),
        ("2026-11-01T00:30:00-08:30", datetime(2026, 11, 1, 9, 0, tzinfo=UTC)),
        (datetime(2026, 11, 1, 9, 0, tzinfo=UTC), datetime(2026, 11, 1, 9, 0, tzinfo=UTC)),
        (datetime(2026, 11, 1, 10, 0, tzinfo=timezone(timedelta(hours=1))), datetime(2026, 11, 1, 9, 0, tzinfo=UTC)),
    ],
)
def test_every_aware_time_ends_up_in_utc(time: Any, utc: datetime) -> None:
    ev = CloudEvent.model_validate(envelope(time=time))
    assert ev.time == utc
    assert ev.time.tzinfo is UTC
    assert b'"time":"2026-11-01T09:00:00Z"' in ev.to_json()


@pytest.mark.parametrize("time", [datetime(2026, 11, 1, 9, 0), datetime(2026, 11, 1, 9, 0, tzinfo=_NoOffset())])
def test_a_time_without_offset_is_refused(time: datetime) -> None:
    with pytest.raises(ValidationError) as info:
        CloudEvent.model_validate(envelope(time=time))
    assert [e["field"] for e in describe_validation_error(info.value)] == ["time"]


def test_extension_attributes() -> None:
    ev = CloudEvent.model_validate(envelope(traceparent="00-x", partitionkey2="k"))
    assert ev.model_extra == {"traceparent": "00-x", "partitionkey2": "k"}
    for bad in ("Upper", "with_underscore", "a" * 21):
        with pytest.raises(ValidationError):
            CloudEvent.model_validate(envelope(**{bad: "x"}))


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"time": "2026-11-01T10:00:00"}, "time"),
        ({"id": ""}, "id"),
        ({"datacontenttype": "text/xml"}, "datacontenttype"),
        ({"BadExt": "x"}, "(root)"),
    ],
)
def test_envelope_errors_name_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        CloudEvent.model_validate(envelope(**over))
    assert [e["field"] for e in describe_validation_error(info.value)] == [field]


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"amount_minor": 12.5}, "amount_minor"),
        ({"amount_minor": "100"}, "amount_minor"),
        ({"amount_minor": True}, "amount_minor"),
        ({"amount_minor": -1}, "amount_minor"),
        ({"currency": "XYZ"}, "currency"),
        ({"due_date": "2026-02-30"}, "due_date"),
        ({"due_date": "2026-09-30"}, "(root)"),
        ({"invoice_id": "has space"}, "invoice_id"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invoice_errors_name_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        InvoiceIssued.model_validate(invoice(**over))
    assert [e["field"] for e in describe_validation_error(info.value)] == [field]


def test_validation_errors_never_echo_the_input() -> None:
    with pytest.raises(ValidationError) as info:
        Customer.model_validate(
            {"account_id": "A-1", "name": "N", "email": "not-an-address", "country": "DE", "timezone": "Europe/Berlin"}
        )
    assert "not-an-address" not in str(describe_validation_error(info.value))


@pytest.mark.parametrize(
    ("field", "value"),
    [("timezone", "Mars/Olympus"), ("country", "XX"), ("phone", "0151 123"), ("language", "zz-ZZ-x")],
)
def test_customer_fields_are_checked(field: str, value: str) -> None:
    data = {"account_id": "A-1", "name": "N", "country": "DE", "timezone": "Europe/Berlin", field: value}
    with pytest.raises(ValidationError):
        Customer.model_validate(data)


def test_payment_allocations_cannot_exceed_the_amount() -> None:
    with pytest.raises(ValidationError, match="allocations add up"):
        PaymentReceived.model_validate(
            {
                "payment_id": "P",
                "account_id": "A",
                "currency": "EUR",
                "amount_minor": 100,
                "received_at": "2026-11-01T00:00:00Z",
                "allocations": [{"invoice_id": "I", "amount_minor": 101}],
            }
        )


def test_notification_needs_the_channel_address() -> None:
    with pytest.raises(ValidationError, match="needs recipient.phone"):
        NotificationRequested.model_validate(
            {
                "notification_id": "n",
                "case_id": "c",
                "account_id": "a",
                "channel": "sms",
                "template": "t",
                "locale": "en",
                "recipient": {"email": "a@b.example", "timezone": "UTC"},
            }
        )


def test_parse_data_checks_type_and_subject() -> None:
    ev = CloudEvent.model_validate(envelope())
    assert isinstance(parse_data(ev), InvoiceIssued)
    with pytest.raises(UnknownEventType):
        parse_data(CloudEvent.model_validate(envelope(type="ar.unknown")))
    with pytest.raises(ValueError, match="subject"):
        parse_data(CloudEvent.model_validate(envelope(subject="OTHER")))


def test_round_trip_through_json() -> None:
    ev = new_event(
        type="ar.invoice.issued",
        source="s",
        subject="A-1",
        data=InvoiceIssued.model_validate(invoice()),
        time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    again = CloudEvent.from_json(ev.to_json())
    assert again == ev
    assert set(EVENT_MODELS) >= {"ar.customer.upserted", "ar.account.updated", "collections.delivery.updated"}


@pytest.mark.parametrize(
    ("time", "subject"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), "A-1"),
        (datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2))), "A-1"),
        (datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC), None),
    ],
)
def test_event_json_is_the_envelope_new_event_writes(time: datetime, subject: str | None) -> None:
    data = InvoiceIssued.model_validate(invoice())
    kwargs: dict[str, Any] = {"type": "ar.invoice.issued", "source": "s", "subject": subject, "time": time, "id": "e-9"}
    expected = new_event(data=data, **kwargs).to_json()
    written = event_json(data_json=data.model_dump_json(exclude_none=True), **kwargs)
    assert written == expected  # the same bytes, not only the same content
    assert CloudEvent.from_json(written) == CloudEvent.from_json(expected)
    assert event_json(data_json=data.model_dump_json(exclude_none=True).encode(), **kwargs) == expected


def test_event_json_needs_an_offset() -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        event_json(type="t", source="s", subject=None, time=datetime(2026, 1, 1), id="e", data_json="{}")
