"""EventRouter.decode: envelope and data of a typed batch route validated in one call from the bytes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_shared.events.envelope import CloudEvent, new_event, typed_envelope
from arrears_shared.messaging.consumer import EventRouter

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


class Counted(BaseModel):
    n: int


class Named(BaseModel):
    name: str


async def handler(session: AsyncSession, items: list[tuple[CloudEvent, Any]]) -> None:
    raise NotImplementedError


def raw(type_: str, data: dict[str, Any], **extensions: str) -> bytes:
    return new_event(type=type_, source="test", subject="A", data=data, time=NOW, id="e1", **extensions).to_json()


@pytest.mark.parametrize("both", [False, True])
def test_a_typed_route_decodes_its_data_into_the_model(both: bool) -> None:
    router = EventRouter()
    router.add_batch({"test.a": Counted}, handler, typed=True)
    if both:  # two typed types: one tagged union over the type
        router.add_batch({"test.b": Named}, handler, typed=True)
    event = router.decode(raw("test.a", {"n": 3}, traceid="t1"))
    assert isinstance(event, CloudEvent)
    data: Any = event.data
    assert data == Counted(n=3)
    assert (event.id, event.source, event.type, event.time, event.subject) == ("e1", "test", "test.a", NOW, "A")
    assert event.model_extra == {"traceid": "t1"}
    assert event.dedupe_key == CloudEvent.from_json(raw("test.a", {"n": 3})).dedupe_key
    assert event.to_json() == raw("test.a", {"n": 3}, traceid="t1")  # serializes as the plain envelope
    if both:
        other: Any = router.decode(raw("test.b", {"name": "x"})).data
        assert other == Named(name="x")


def test_invalid_data_and_other_types_decode_as_the_plain_envelope() -> None:
    router = EventRouter()
    router.add_batch({"test.a": Counted}, handler, typed=True)
    router.add_batch({"test.u": Counted}, handler)  # not typed
    for message in (raw("test.a", {"n": "x"}), raw("test.u", {"n": 1}), raw("test.other", {"n": 1})):
        event = router.decode(message)
        assert event == CloudEvent.from_json(message)
        assert isinstance(event.data, dict)  # data judged later, as without typed decoding


def test_an_invalid_envelope_is_refused_as_before() -> None:
    router = EventRouter()
    router.add_batch({"test.a": Counted}, handler, typed=True)
    naive = raw("test.a", {"n": 1}).replace(b'"2026-12-03T09:00:00Z"', b'"2026-12-03T09:00:00"')
    with pytest.raises(ValidationError):
        router.decode(naive)
    with pytest.raises(ValidationError):
        CloudEvent.from_json(naive)


def test_typed_envelope_keeps_the_envelope_rules() -> None:
    typed = typed_envelope(Counted, "test.a")
    bad = raw("test.a", {"n": 1}, traceid="t1").replace(b'"traceid"', b'"BAD"')
    with pytest.raises(ValidationError):
        typed.model_validate_json(bad)  # extension names checked as by CloudEvent
    with pytest.raises(ValidationError):
        typed.model_validate_json(raw("test.b", {"n": 1}))  # another type
