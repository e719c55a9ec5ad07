"""Features of one invoice, computed only from what was known on the day it was issued.

The same function feeds training (on the ledger's settled invoices or the IBM sample), the
backtest and live scoring, so a model never sees a feature it was not trained on. History is
the account's invoices settled *before* the invoice's issue date. ``days_past_due`` and the
account-level facts (disputes open now, broken promises, partial payments, credit use) change
after issue; they enter the live score through prior coefficients (``"source": "prior"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

# The features the first model was fitted on (docs/scoring.md "Model selection": the ``base`` set).
BASE_FEATURES: tuple[str, ...] = (
    "past_late_ratio",
    "past_mean_days_late",
    "recent_late_ratio",
    "last_days_late",
    "past_invoices_log",
    "no_history",
    "amount_ratio",
    "past_dispute_ratio",
    "days_since_last_settlement",
    "terms_days",
    "open_at_issue",
    "overdue_at_issue",
    "max_days_overdue_at_issue",
)

# Further features of the ledger's history (the ``ledger`` set of the model selection): the signed
# lateness of settled invoices (settled day minus due day, negative when paid early, so early payers
# are told from on-time ones), its recency-weighted and recent trend, a recency-weighted late ratio,
# and the invoiced amounts open and overdue on the issue day against the account's usual amount.
LEDGER_FEATURES: tuple[str, ...] = (
    "past_mean_signed_late",
    "past_median_signed_late",
    "last_signed_late",
    "ewm_signed_late",
    "signed_late_trend",
    "past_sd_signed_late",
    "ewm_late_ratio",
    "open_amount_ratio",
    "overdue_amount_ratio",
)

TRAINED_FEATURES: tuple[str, ...] = (*BASE_FEATURES, *LEDGER_FEATURES)


@dataclass(frozen=True)
class SettledInvoice:
    issue_date: date
    due_date: date
    settled_date: date
    amount_minor: int
    disputed: bool = False

    @property
    def days_late(self) -> int:
        return max((self.settled_date - self.due_date).days, 0)

    @property
    def signed_days_late(self) -> int:
        """Settled day minus due day: negative when paid early."""
        return (self.settled_date - self.due_date).days


RECENT = 5
# Weight of the newest settlement in the exponentially weighted features (the older ones' weights
# decay by 1 - EWM_ALPHA per settlement); fixed, not tuned.
EWM_ALPHA = 0.3


_NO_HISTORY: dict[str, float] = {
    "past_late_ratio": 0.0,
    "past_mean_days_late": 0.0,
    "recent_late_ratio": 0.0,
    "last_days_late": 0.0,
    "past_invoices_log": 0.0,
    "no_history": 1.0,
    "past_dispute_ratio": 0.0,
    "past_mean_signed_late": 0.0,
    "past_median_signed_late": 0.0,
    "last_signed_late": 0.0,
    "ewm_signed_late": 0.0,
    "signed_late_trend": 0.0,
    "past_sd_signed_late": 0.0,
    "ewm_late_ratio": 0.0,
    "_mean_amount": 0.0,
    "_last_settled": 0.0,
}


def history_features(history: Sequence[SettledInvoice]) -> dict[str, float]:
    """The features of :func:`invoice_features` that depend on ``history`` alone (one account's
    settled invoices known on a day), plus ``_mean_amount`` and ``_last_settled`` (an ordinal, or
    0.0 with no history) from which :func:`invoice_features` derives the rest; computed once per
    history, however many invoices share it (the publisher's hot path: each list is built once)."""
    n = len(history)
    if not n:
        return dict(_NO_HISTORY)
    signed = [float((h.settled_date - h.due_date).days) for h in history]
    late = [d if d > 0 else 0.0 for d in signed]  # days_late: max(signed, 0)
    is_late = [1.0 if d > 0 else 0.0 for d in signed]
    mean_signed = sum(signed) / n
    recent_late = is_late[-RECENT:]
    recent_signed = signed[-RECENT:]
    ordered = sorted(signed)
    ewm_signed = signed[0]
    ewm_late = is_late[0]
    for k in range(1, n):
        ewm_signed += EWM_ALPHA * (signed[k] - ewm_signed)
        ewm_late += EWM_ALPHA * (is_late[k] - ewm_late)
    return {
        "past_late_ratio": sum(is_late) / n,
        "past_mean_days_late": sum(late) / n,
        "recent_late_ratio": sum(recent_late) / len(recent_late),
        "last_days_late": late[-1],
        "past_invoices_log": math.log1p(n),
        "no_history": 0.0,
        "past_dispute_ratio": sum(1 for h in history if h.disputed) / n,
        "past_mean_signed_late": mean_signed,
        "past_median_signed_late": (ordered[(n - 1) // 2] + ordered[n // 2]) / 2,
        "last_signed_late": signed[-1],
        "ewm_signed_late": ewm_signed,
        "signed_late_trend": sum(recent_signed) / len(recent_signed) - mean_signed,
        "past_sd_signed_late": math.sqrt(sum((v - mean_signed) ** 2 for v in signed) / n),
        "ewm_late_ratio": ewm_late,
        "_mean_amount": sum(h.amount_minor for h in history) / n,
        "_last_settled": float(history[-1].settled_date.toordinal()),
    }


def invoice_features(
    history: Sequence[SettledInvoice],
    issue_date: date,
    due_date: date,
    amount_minor: int,
    open_due_dates: Sequence[date] = (),
    summary: dict[str, float] | None = None,
    open_amounts: Sequence[int] | None = None,
) -> dict[str, float]:
    """``history`` must already be limited to invoices settled before ``issue_date``, oldest
    settlement first (:func:`known_before` does that); ``open_due_dates`` are the due dates of
    the account's other invoices issued before and still open on ``issue_date``, and
    ``open_amounts`` their invoiced amounts, in the same order (none: the amount features are 0).
    ``summary`` is :func:`history_features` of ``history`` when the caller has it already."""
    out = dict(summary if summary is not None else history_features(history))
    mean_amount = out.pop("_mean_amount")
    last_settled = out.pop("_last_settled")
    overdue = [(issue_date - d).days for d in open_due_dates if d < issue_date]
    # the account's usual amount: its settled invoices' mean, or this invoice's with no history
    usual = mean_amount if mean_amount > 0 else float(amount_minor)
    if open_amounts is None:
        open_amount = overdue_amount = 0
    else:
        open_amount = sum(open_amounts)
        overdue_amount = sum(a for d, a in zip(open_due_dates, open_amounts, strict=True) if d < issue_date)
    out["amount_ratio"] = amount_minor / mean_amount if mean_amount > 0 else 1.0
    out["days_since_last_settlement"] = float(issue_date.toordinal() - int(last_settled)) if history else 0.0
    out["terms_days"] = float((due_date - issue_date).days)
    out["open_at_issue"] = float(len(open_due_dates))
    out["overdue_at_issue"] = float(len(overdue))
    out["max_days_overdue_at_issue"] = float(max(overdue, default=0))
    out["open_amount_ratio"] = open_amount / usual if usual > 0 else 0.0
    out["overdue_amount_ratio"] = overdue_amount / usual if usual > 0 else 0.0
    return out


def known_before(history: Sequence[SettledInvoice], day: date) -> list[SettledInvoice]:
    """The invoices settled strictly before ``day``, oldest settlement first."""
    return sorted((h for h in history if h.settled_date < day), key=lambda h: (h.settled_date, h.issue_date))


@dataclass(frozen=True)
class Record:
    """One settled invoice of one account (the unit of training)."""

    account_id: str
    invoice_id: str
    issue_date: date
    due_date: date
    settled_date: date
    amount_minor: int
    disputed: bool

    @property
    def late(self) -> bool:
        return self.settled_date > self.due_date

    def as_history(self) -> SettledInvoice:
        return SettledInvoice(self.issue_date, self.due_date, self.settled_date, self.amount_minor, self.disputed)
