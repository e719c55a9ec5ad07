"""The case manager's own envelopes (built without re-validation, serialized once) are the ones
``new_event`` builds: the same fields and the same bytes on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from arrears_case_manager.cases.service import SOURCE, _event
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
