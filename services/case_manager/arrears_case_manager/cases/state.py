"""The case state machine: which event may move a case from which status to which."""

from __future__ import annotations

from typing import Literal

from arrears_shared.errors import ConflictError

Status = Literal[
    "open", "promised", "payment_plan", "disputed", "paused", "escalated_external", "resolved", "written_off"
]
STATUSES: tuple[Status, ...] = (
    "open",
    "promised",
    "payment_plan",
    "disputed",
    "paused",
    "escalated_external",
    "resolved",
    "written_off",
)
CLOSED: frozenset[Status] = frozenset({"resolved", "written_off"})
ESCALATING: frozenset[Status] = frozenset({"open"})

CaseCommand = Literal[
    "promise",
    "promise_kept",
    "promise_broken",
    "plan",
    "plan_completed",
    "plan_defaulted",
    "dispute",
    "dispute_resolved",
    "pause",
    "resume",
    "escalate",
    "pay_in_full",
    "write_off",
]

ACTIVE: tuple[Status, ...] = ("open", "promised", "payment_plan", "disputed", "paused", "escalated_external")

TRANSITIONS: dict[CaseCommand, dict[Status, Status]] = {
    "promise": {"open": "promised", "paused": "promised"},
    "promise_kept": {"promised": "open"},
    "promise_broken": {"promised": "open"},
    "plan": {"open": "payment_plan", "promised": "payment_plan", "paused": "payment_plan"},
    "plan_completed": {"payment_plan": "open"},
    "plan_defaulted": {"payment_plan": "open"},
    "dispute": dict.fromkeys(("open", "promised", "payment_plan", "paused", "disputed"), "disputed"),
    "dispute_resolved": {"disputed": "open"},
    "pause": {"open": "paused", "promised": "paused"},
    "resume": {"paused": "open"},
    "escalate": dict.fromkeys(("open", "promised", "payment_plan", "paused"), "escalated_external"),
    "pay_in_full": dict.fromkeys(ACTIVE, "resolved"),
    "write_off": dict.fromkeys(ACTIVE, "written_off"),
}


def transition(status: Status, command: CaseCommand) -> Status:
    """The status after ``command``, or :class:`ConflictError` naming why it is not allowed."""
    allowed = TRANSITIONS[command]
    if status not in allowed:
        froms = ", ".join(sorted(allowed))
        raise ConflictError(f"cannot {command.replace('_', ' ')} a case that is {status}; allowed from: {froms}")
    return allowed[status]
