"""Request bodies of the case API (validated before any logic runs)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from arrears_shared.events.fields import PositiveMinor, UtcDatetime
from arrears_shared.money import Currency


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoteIn(_Body):
    text: str = Field(min_length=1, max_length=5000)


class AssignIn(_Body):
    assignee: str | None = Field(description="Collector id; null unassigns.", min_length=1, max_length=128)


class PromiseIn(_Body):
    currency: Currency
    amount_minor: PositiveMinor = Field(description="Integer minor units of the currency.")
    date: dt.date = Field(description="The day the customer promises to pay by.")


class InstallmentIn(_Body):
    due_date: dt.date
    amount_minor: PositiveMinor


class PlanIn(_Body):
    currency: Currency
    installments: list[InstallmentIn] = Field(min_length=1, max_length=60)


class DisputeIn(_Body):
    invoice_ids: list[str] = Field(min_length=1, max_length=500)
    reason: str = Field(min_length=1, max_length=1000)


class DisputeResolveIn(_Body):
    outcome: Literal["upheld", "rejected"] = Field(
        description="upheld: the customer was right (the ERP corrects the invoice); rejected: the debt stands."
    )
    note: str | None = Field(default=None, max_length=1000)


class PauseIn(_Body):
    reason: str = Field(min_length=1, max_length=1000)
    until: UtcDatetime | None = Field(default=None, description="Resume automatically at this time (UTC).")


class ReasonIn(_Body):
    reason: str = Field(min_length=1, max_length=1000)
