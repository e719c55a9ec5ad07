"""Which level would fire on which day for an account, and why (``arrears-cases policy simulate``)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from arrears_case_manager.policy.models import Policy
from arrears_shared.events.v1 import AccountUpdated


def simulate(policy: Policy, account: AccountUpdated, today: date) -> dict[str, Any]:
    segment = account.customer.segment if account.customer else None
    ladder = policy.ladder(account.risk.tier, segment)
    variant = getattr(ladder, "name", None) if ladder is not policy else None
    which = f"variant {variant!r}" if variant else "the default ladder"
    out: dict[str, Any] = {
        "account_id": account.account_id,
        "tier": account.risk.tier,
        "segment": segment,
        "ladder": variant or "default",
        "oldest_due_date": account.oldest_due_date.isoformat() if account.oldest_due_date else None,
        "steps": [],
    }
    if account.oldest_due_date is None or sum(b.open_minor for b in account.balances) <= 0:
        out["summary"] = "nothing is owed: no case, nothing fires"
        return out
    oldest = account.oldest_due_date
    reached = ladder.level_for((today - oldest).days)
    reached_idx = ladder.index(reached.name) if reached else -1
    for idx, level in enumerate(ladder.levels):
        on = oldest + timedelta(days=level.day)
        minimums = [
            f"{b.currency} overdue {b.overdue_minor} < minimum {level.min_amount_minor[b.currency]}"
            for b in account.balances
            if b.currency in level.min_amount_minor and b.overdue_minor < level.min_amount_minor[b.currency]
        ]
        below = bool(level.min_amount_minor) and all(
            b.overdue_minor < level.min_amount_minor.get(b.currency, 0) for b in account.balances
        )
        if idx < reached_idx:
            fires, why = False, f"its day ({on}) is past and a case never replays missed levels"
        elif idx == reached_idx:
            fires, why = True, f"the level reached today ({today}, day {(today - oldest).days} of {which})"
        else:
            fires, why = True, f"day {level.day} after the oldest due date {oldest} in {which}"
        if fires and below:
            fires, why = False, "below the level's minimum amount: " + "; ".join(minimums)
        out["steps"].append(
            {
                "level": level.name,
                "on": (today if idx == reached_idx else on).isoformat(),
                "fires": fires,
                "channels": list(level.channels),
                "actions": list(level.actions),
                "template": level.template,
                "why": why,
            }
        )
    out["summary"] = (
        "a promise, payment plan, dispute or pause suspends these steps;"
        " a broken promise or missed installment resumes them"
    )
    return out
