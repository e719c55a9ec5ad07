"""ARREARS_KAFKA_CONSUMERS: each consumer group runs that many Kafka consumers in one process, each its
own background loop (they split the group's partitions)."""

from __future__ import annotations

from arrears_case_manager.app import create_app
from arrears_case_manager.models import inbox, outbox
from arrears_case_manager.settings import CaseSettings
from arrears_shared.messaging.consumer import BatchConsumer
from arrears_shared.runtime import Runtime


def _runtime(**settings: object) -> Runtime:
    config = CaseSettings(database_url="postgresql://localhost/none", **settings)  # type: ignore[arg-type]
    runtime = Runtime(service="case_manager", settings=config, outbox_table=outbox, inbox_table=inbox)
    create_app(config, runtime)
    return runtime


def test_one_consumer_per_group_by_default() -> None:
    names = [n for n in _runtime().loop_names if n.startswith("consumer:")]
    assert names == ["consumer:arrears-case-manager"]


async def test_several_consumers_of_one_group_each_run_as_a_loop() -> None:
    runtime = _runtime(kafka_consumers=3)
    expected = ["consumer:arrears-case-manager", "consumer:arrears-case-manager:1", "consumer:arrears-case-manager:2"]
    assert [n for n in runtime.loop_names if n.startswith("consumer:")] == expected
    runtime._build_consumers()  # what start() does before it runs the loops; nothing connects yet
    assert len(runtime.consumers) == 3
    assert all(isinstance(c, BatchConsumer) and c.group_id == "arrears-case-manager" for c in runtime.consumers)
    assert len({id(c.consumer) for c in runtime.consumers}) == 3, "each its own Kafka consumer"
    assert runtime.consumer_groups == {"arrears-case-manager": runtime.consumer_groups["arrears-case-manager"]}


def test_api_role_runs_no_consumer_whatever_the_count() -> None:
    assert _runtime(role="api", kafka_consumers=4).loop_names == ["outbox-relay"]
