"""The case manager's own envelopes (built without re-validation, serialized once) are the ones
``new_event`` builds: the same fields and the same bytes on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from arrears_case_manager.cases.service import SOURCE, _event, _OwnEvent
from arrears_shared.events.envelope import CloudEvent, new_event
from arrears_shared.events.v1 import CaseEvent


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 12, 3, 9, 0, tzinfo=UTC),
        datetime(2026, 12, 3, 9, 0, 1, 123456, tzinfo=UTC),
        datetime(2026, 12, 3, 10, 0, 0, 500, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_own_event_is_new_event(at: datetime) -> None:
    data = CaseEvent(case_id="C-1", account_id="A-1", stage="reminder", amount_minor=12_345, currency="EUR")
    own = _event("collections.case.opened", "A-1", data, at, "id-1")
    expected = new_event(type="collections.case.opened", source=SOURCE, subject="A-1", data=data, time=at, id="id-1")
    assert own.to_json() == expected.to_json()
    assert own.model_dump() == expected.model_dump()
    assert CloudEvent.from_json(own.to_json()) == expected
    assert (
        _event("collections.case.opened", "A-1", data, at).id != _event("collections.case.opened", "A-1", data, at).id
    )


def test_own_event_is_what_model_construct_builds() -> None:
    """_event sets the instance up directly; it must be the one model_construct would build."""
    at = datetime(2026, 12, 3, 10, 0, 0, 500, tzinfo=timezone(timedelta(hours=1)))
    data = CaseEvent(case_id="C-1", account_id="A-1", stage="reminder")
    own = _event("collections.case.opened", "A-1", data, at, "id-1")
    fields: dict[str, Any] = {
        "specversion": "1.0",
        "id": "id-1",
        "source": SOURCE,
        "type": "collections.case.opened",
        "time": at.astimezone(UTC),
        "subject": "A-1",
        "datacontenttype": "application/json",
        "data": data.model_dump(mode="json", exclude_none=True),
    }
    built = _OwnEvent.model_construct(**fields)
    built._payload = own.to_json()
    assert type(own) is type(built)
    assert list(own.__dict__.items()) == list(built.__dict__.items())
    assert own.model_fields_set == built.model_fields_set
    assert own.model_extra == built.model_extra
    assert own.__pydantic_private__ == built.__pydantic_private__
    assert own == built
    assert own.model_dump_json() == built.model_dump_json()
