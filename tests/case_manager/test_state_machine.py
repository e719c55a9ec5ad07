"""The case state machine, exhaustively: every status against every command."""

from __future__ import annotations

from typing import get_args

import pytest

from arrears_case_manager.cases.state import STATUSES, TRANSITIONS, CaseCommand, Status, transition
from arrears_shared.errors import ConflictError

COMMANDS: tuple[CaseCommand, ...] = get_args(CaseCommand)
ACTIVE = ("open", "promised", "payment_plan", "disputed", "paused", "escalated_external")

# The expected table, written out independently of the implementation: (status, command) -> new status.
EXPECTED: dict[tuple[str, str], str] = {
    ("open", "promise"): "promised",
    ("paused", "promise"): "promised",
    ("promised", "promise_kept"): "open",
    ("promised", "promise_broken"): "open",
    ("open", "plan"): "payment_plan",
    ("promised", "plan"): "payment_plan",
    ("paused", "plan"): "payment_plan",
    ("payment_plan", "plan_completed"): "open",
    ("payment_plan", "plan_defaulted"): "open",
    **{(s, "dispute"): "disputed" for s in ("open", "promised", "payment_plan", "paused", "disputed")},
    ("disputed", "dispute_resolved"): "open",
    ("open", "pause"): "paused",
    ("promised", "pause"): "paused",
    ("paused", "resume"): "open",
    **{(s, "escalate"): "escalated_external" for s in ("open", "promised", "payment_plan", "paused")},
    **{(s, "pay_in_full"): "resolved" for s in ACTIVE},
    **{(s, "write_off"): "written_off" for s in ACTIVE},
}


def test_every_command_is_in_the_table() -> None:
    assert set(TRANSITIONS) == set(COMMANDS)


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_status_against_every_command(status: Status, command: CaseCommand) -> None:
    expected = EXPECTED.get((status, command))
    if expected is None:
        with pytest.raises(ConflictError) as err:
            transition(status, command)
        message = str(err.value)
        assert status in message
        assert "allowed from" in message
    else:
        assert transition(status, command) == expected


@pytest.mark.parametrize("closed", ["resolved", "written_off"])
def test_closed_cases_accept_nothing(closed: Status) -> None:
    for command in COMMANDS:
        with pytest.raises(ConflictError):
            transition(closed, command)
