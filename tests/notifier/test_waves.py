"""The dispatcher's group commit (``_Waves``): hand-over marks and outcomes that arrive together
share one transaction; a wave whose outcome cannot be recorded falls back to committing apart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from arrears_notifier.deliveries.service import _Outcome, _Waves


class FakeTransaction:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def __aenter__(self) -> FakeTransaction:
        return self

    async def __aexit__(self, exc_type: Any, *_: Any) -> bool:
        self.log.append("rollback" if exc_type else "commit")
        return False


class FakeSession:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.statements: list[str] = []

    async def __aenter__(self) -> FakeSession:
        return self

    async def __aexit__(self, *_: Any) -> bool:
        return False

    def begin(self) -> FakeTransaction:
        return FakeTransaction(self.log)


class FakeService:
    """Marks every id but ``moved`` as sending; an outcome for ``poison`` cannot be recorded."""

    def __init__(self, moved: frozenset[str] = frozenset(), poison: str | None = None) -> None:
        self.gate: asyncio.Event | None = None  # when set, a mark waits for it (a slow commit)
        self.marking = asyncio.Event()
        self.calls: list[tuple[str, list[str]]] = []
        self.moved = moved
        self.poison = poison
        self.clock = SimpleNamespace(now=lambda: datetime.now(UTC))
        self.repo = SimpleNamespace(mark_sending_many=self._mark)

    async def _mark(self, _session: FakeSession, ids: list[str], _now: datetime) -> frozenset[str]:
        self.calls.append(("mark", list(ids)))
        self.marking.set()
        if self.gate is not None:
            await self.gate.wait()
        return frozenset(ids) - self.moved

    async def record_outcomes(self, _session: FakeSession, outcomes: list[_Outcome]) -> None:
        ids = [o.row.notification_id for o in outcomes]
        self.calls.append(("record", ids))
        if self.poison in ids:
            raise RuntimeError("cannot record")


def outcome(nid: str) -> _Outcome:
    return _Outcome(SimpleNamespace(notification_id=nid), "sent", None, f"P-{nid}", None, False)  # type: ignore[arg-type]


def waves_for(service: FakeService, log: list[str]) -> _Waves:
    return _Waves(service, lambda: FakeSession(log), asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_marks_and_outcomes_arriving_together_share_one_transaction() -> None:
    log: list[str] = []
    service = FakeService(moved=frozenset({"h3"}))
    waves = waves_for(service, log)
    handed = asyncio.gather(*(waves.handover(f"h{i}") for i in range(1, 4)))
    recorded = asyncio.gather(*(waves.record(outcome(f"o{i}")) for i in range(1, 4)))
    assert await handed == [True, True, False]  # h3 had moved on meanwhile
    await recorded
    assert waves.transactions == 1
    assert log == ["commit"]
    assert service.calls == [("mark", ["h1", "h2", "h3"]), ("record", ["o1", "o2", "o3"])]


async def test_what_arrives_during_a_flush_forms_the_next_wave() -> None:
    log: list[str] = []
    service = FakeService()
    service.gate = asyncio.Event()
    waves = waves_for(service, log)
    first = asyncio.ensure_future(waves.handover("a"))
    await service.marking.wait()  # the flush has started with "a" alone
    second = asyncio.gather(waves.record(outcome("b")), waves.handover("c"))
    await asyncio.sleep(0)
    service.gate.set()
    assert await first
    await second
    assert service.calls == [("mark", ["a"]), ("mark", ["c"]), ("record", ["b"])]
    assert waves.transactions == 2


async def test_an_outcome_that_cannot_be_recorded_holds_up_neither_the_marks_nor_the_others() -> None:
    log: list[str] = []
    service = FakeService(poison="o2")
    waves = waves_for(service, log)
    handed = asyncio.gather(waves.handover("h1"), waves.handover("h2"))
    recorded = asyncio.gather(*(waves.record(outcome(f"o{i}")) for i in range(1, 4)), return_exceptions=True)
    assert list(await handed) == [True, True]
    results = await recorded
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], RuntimeError)
    # The wave together (rolled back), then the marks alone, then each outcome alone.
    assert service.calls == [
        ("mark", ["h1", "h2"]),
        ("record", ["o1", "o2", "o3"]),
        ("mark", ["h1", "h2"]),
        ("record", ["o1"]),
        ("record", ["o2"]),
        ("record", ["o3"]),
    ]
    assert log == ["rollback", "commit", "commit", "rollback", "commit"]


async def test_a_mark_that_cannot_be_committed_fails_only_the_sends_it_marks() -> None:
    log: list[str] = []
    service = FakeService()

    async def broken(_session: FakeSession, ids: list[str], _now: datetime) -> frozenset[str]:
        service.calls.append(("mark", list(ids)))
        raise ConnectionError("database gone")

    service.repo.mark_sending_many = broken
    waves = waves_for(service, log)
    handed = asyncio.gather(waves.handover("h1"), return_exceptions=True)
    recorded = asyncio.gather(waves.record(outcome("o1")), waves.record(outcome("o2")))
    (error,) = await handed
    assert isinstance(error, ConnectionError)
    await recorded  # recorded apart, after the wave failed
    assert ("record", ["o1"]) in service.calls and ("record", ["o2"]) in service.calls


async def test_a_single_kind_wave_that_fails_fails_its_sends() -> None:
    log: list[str] = []
    service = FakeService(poison="o1")
    waves = waves_for(service, log)
    with pytest.raises(RuntimeError):
        await waves.record(outcome("o1"))
    assert service.calls == [("record", ["o1"])]  # one outcome alone is not tried again
