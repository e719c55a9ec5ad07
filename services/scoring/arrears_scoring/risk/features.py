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


def _ewm(values: Sequence[float]) -> float:
    """Exponentially weighted mean, oldest first (``values`` non-empty)."""
    out = values[0]
    for v in values[1:]:
        out += EWM_ALPHA * (v - out)
    return out


def history_features(history: Sequence[SettledInvoice]) -> dict[str, float]:
    """The features of :func:`invoice_features` that depend on ``history`` alone (one account's
    settled invoices known on a day), plus ``_mean_amount`` and ``_last_settled`` (an ordinal, or
    0.0 with no history) from which :func:`invoice_features` derives the rest; computed once per
    history, however many invoices share it."""
    n = len(history)
    late = [h.days_late for h in history]
    recent = late[-RECENT:]
    signed = [float(h.signed_days_late) for h in history]
    mean_signed = sum(signed) / n if n else 0.0
    recent_signed = signed[-RECENT:]
    ordered = sorted(signed)
    median_signed = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2 if n else 0.0
    sd_signed = math.sqrt(sum((v - mean_signed) ** 2 for v in signed) / n) if n else 0.0
    return {
        "past_late_ratio": sum(1 for d in late if d > 0) / n if n else 0.0,
        "past_mean_days_late": sum(late) / n if n else 0.0,
        "recent_late_ratio": sum(1 for d in recent if d > 0) / len(recent) if recent else 0.0,
        "last_days_late": float(late[-1]) if late else 0.0,
        "past_invoices_log": math.log1p(n),
        "no_history": 0.0 if n else 1.0,
        "past_dispute_ratio": sum(1 for h in history if h.disputed) / n if n else 0.0,
        "past_mean_signed_late": mean_signed,
        "past_median_signed_late": median_signed,
        "last_signed_late": signed[-1] if n else 0.0,
        "ewm_signed_late": _ewm(signed) if n else 0.0,
        "signed_late_trend": sum(recent_signed) / len(recent_signed) - mean_signed if n else 0.0,
        "past_sd_signed_late": sd_signed,
        "ewm_late_ratio": _ewm([1.0 if d > 0 else 0.0 for d in late]) if n else 0.0,
        "_mean_amount": sum(h.amount_minor for h in history) / n if n else 0.0,
        "_last_settled": float(history[-1].settled_date.toordinal()) if n else 0.0,
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
    h = summary if summary is not None else history_features(history)
    overdue = [(issue_date - d).days for d in open_due_dates if d < issue_date]
    n = len(history)
    mean_amount = h["_mean_amount"]
    # the account's usual amount: its settled invoices' mean, or this invoice's with no history
    usual = mean_amount if mean_amount > 0 else float(amount_minor)
    amounts = open_amounts if open_amounts is not None else [0] * len(open_due_dates)
    open_amount = sum(amounts)
    overdue_amount = sum(a for d, a in zip(open_due_dates, amounts, strict=True) if d < issue_date)
    return {
        "past_late_ratio": h["past_late_ratio"],
        "past_mean_days_late": h["past_mean_days_late"],
        "recent_late_ratio": h["recent_late_ratio"],
        "last_days_late": h["last_days_late"],
        "past_invoices_log": h["past_invoices_log"],
        "no_history": h["no_history"],
        "amount_ratio": amount_minor / mean_amount if mean_amount > 0 else 1.0,
        "past_dispute_ratio": h["past_dispute_ratio"],
        "days_since_last_settlement": float(issue_date.toordinal() - int(h["_last_settled"])) if n else 0.0,
        "terms_days": float((due_date - issue_date).days),
        "open_at_issue": float(len(open_due_dates)),
        "overdue_at_issue": float(len(overdue)),
        "max_days_overdue_at_issue": float(max(overdue, default=0)),
        "past_mean_signed_late": h["past_mean_signed_late"],
        "past_median_signed_late": h["past_median_signed_late"],
        "last_signed_late": h["last_signed_late"],
        "ewm_signed_late": h["ewm_signed_late"],
        "signed_late_trend": h["signed_late_trend"],
        "past_sd_signed_late": h["past_sd_signed_late"],
        "ewm_late_ratio": h["ewm_late_ratio"],
        "open_amount_ratio": open_amount / usual if usual > 0 else 0.0,
        "overdue_amount_ratio": overdue_amount / usual if usual > 0 else 0.0,
    }


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
