"""Late fees and interest from an invoice's terms, in integer minor units with explicit rounding."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from arrears_shared.events.v1 import Terms

DAYS_PER_YEAR = Decimal(365)


@dataclass(frozen=True)
class Fee:
    kind: str  # "late_fee" | "interest"
    amount_minor: int
    basis: str  # how it was computed, for the timeline and the event's reason


def _round(value: Decimal) -> int:
    """Half-up to a whole minor unit (0.5 of a cent and more rounds up; amounts are never negative)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def fees_for(open_minor: int, days_past_due: int, terms: Terms | None) -> list[Fee]:
    """The fees an overdue invoice's terms provide: a flat percentage of the open amount and/or
    annual interest accrued daily (actual/365) over the days it is past due. None when the terms
    provide none: fees are charged only where the contract says so."""
    if terms is None or open_minor <= 0 or days_past_due <= 0:
        return []
    out: list[Fee] = []
    if terms.late_fee_percent:
        amount = _round(Decimal(open_minor) * terms.late_fee_percent / 100)
        if amount > 0:
            out.append(Fee("late_fee", amount, f"{terms.late_fee_percent}% of {open_minor}"))
    if terms.annual_interest_percent:
        amount = _round(Decimal(open_minor) * terms.annual_interest_percent / 100 * days_past_due / DAYS_PER_YEAR)
        if amount > 0:
            out.append(
                Fee(
                    "interest",
                    amount,
                    f"{terms.annual_interest_percent}% a year on {open_minor} for {days_past_due} days",
                )
            )
    return out
