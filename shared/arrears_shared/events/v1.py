"""Version 1 of the canonical event payloads (the ``data`` of each CloudEvent), per DESIGN.md.

A consumer looks up the event's ``type`` in :data:`EVENT_MODELS` and validates ``data`` into the
model before any logic runs (:func:`parse_data`). Adding an optional field is a compatible
change; anything else is a new version module and new topic names.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from arrears_shared.events.envelope import CloudEvent
from arrears_shared.events.fields import (
    Country,
    Email,
    Identifier,
    Language,
    MinorUnits,
    NonNegativeMinor,
    Phone,
    PositiveMinor,
    Timezone,
    UtcDatetime,
)
from arrears_shared.money import Currency


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- ledger (ar.ledger.v1)


class Consent(_Model):
    email: bool = True
    sms: bool = False


class Customer(_Model):
    """``ar.customer.upserted``: who the debtor is and how (and whether) to reach them."""

    account_id: Identifier
    name: str = Field(min_length=1, max_length=300)
    email: Email | None = None
    phone: Phone | None = None
    country: Country
    timezone: Timezone
    language: Language = "en"
    consent: Consent = Consent()
    credit_limit_minor: NonNegativeMinor | None = None
    currency: Currency | None = None
    segment: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _limit_has_currency(self) -> Customer:
        if self.credit_limit_minor is not None and self.currency is None:
            raise ValueError("credit_limit_minor needs currency")
        return self


class Terms(_Model):
    code: str = Field(min_length=1, max_length=64)
    late_fee_percent: Decimal | None = Field(default=None, ge=0, le=100)
    annual_interest_percent: Decimal | None = Field(default=None, ge=0, le=100)
    early_discount_percent: Decimal | None = Field(default=None, ge=0, le=100)
    early_discount_days: int | None = Field(default=None, ge=0, le=365)


class InvoiceIssued(_Model):
    invoice_id: Identifier
    invoice_number: str = Field(min_length=1, max_length=128)
    account_id: Identifier
    issue_date: date
    due_date: date
    currency: Currency
    amount_minor: NonNegativeMinor
    tax_minor: NonNegativeMinor | None = None
    terms: Terms | None = None
    purchase_order: str | None = Field(default=None, max_length=128)
    customer: Customer | None = None

    @model_validator(mode="after")
    def _consistent(self) -> InvoiceIssued:
        if self.due_date < self.issue_date:
            raise ValueError("due_date is before issue_date")
        if self.tax_minor is not None and self.tax_minor > self.amount_minor:
            raise ValueError("tax_minor exceeds amount_minor")
        if self.customer is not None and self.customer.account_id != self.account_id:
            raise ValueError("customer.account_id differs from account_id")
        return self


class InvoiceAdjusted(_Model):
    invoice_id: Identifier
    account_id: Identifier
    amount_minor: NonNegativeMinor
    reason: str = Field(min_length=1, max_length=500)


class InvoiceCancelled(_Model):
    invoice_id: Identifier
    account_id: Identifier
    reason: str = Field(min_length=1, max_length=500)


class CreditNoteIssued(_Model):
    credit_note_id: Identifier
    account_id: Identifier
    currency: Currency
    amount_minor: PositiveMinor
    invoice_id: Identifier | None = None
    issue_date: date | None = None


class Allocation(_Model):
    invoice_id: Identifier
    amount_minor: PositiveMinor


class PaymentReceived(_Model):
    payment_id: Identifier
    account_id: Identifier
    currency: Currency
    amount_minor: PositiveMinor
    received_at: UtcDatetime
    method: str | None = Field(default=None, max_length=64)
    reference: str | None = Field(default=None, max_length=1000)
    allocations: list[Allocation] | None = None

    @model_validator(mode="after")
    def _allocations_fit(self) -> PaymentReceived:
        if self.allocations and sum(a.amount_minor for a in self.allocations) > self.amount_minor:
            raise ValueError("allocations add up to more than amount_minor")
        return self


class PaymentReversed(_Model):
    payment_id: Identifier
    account_id: Identifier
    reason: str = Field(min_length=1, max_length=500)


# ------------------------------------------------------------------------- accounts (ar.accounts.v1)

Tier = Literal["low", "medium", "high", "critical"]


class OpenInvoice(_Model):
    invoice_id: str
    invoice_number: str
    currency: Currency
    amount_minor: MinorUnits
    open_minor: MinorUnits
    issue_date: date
    due_date: date
    days_past_due: int
    disputed: bool = False
    terms: Terms | None = None  # the invoice's terms, when scoring knows them (late fees, interest)
    late_probability: float | None = Field(default=None, ge=0, le=1)


class Buckets(_Model):
    current: MinorUnits = 0
    d1_30: MinorUnits = 0
    d31_60: MinorUnits = 0
    d61_90: MinorUnits = 0
    d90_plus: MinorUnits = 0


class Balance(_Model):
    currency: Currency
    open_minor: MinorUnits
    overdue_minor: MinorUnits
    credit_minor: MinorUnits = 0
    buckets: Buckets
    dso_days: float | None = None  # days sales outstanding: open / sales of the last 90 days x 90


class Reason(_Model):
    feature: str
    contribution: float


class Risk(_Model):
    probability: float = Field(ge=0, le=1)
    tier: Tier
    model_version: str
    reasons: list[Reason] = []


class CreditRecommendation(_Model):
    action: Literal["keep_terms", "lower_limit", "require_prepayment"]
    reason: str
    suggested_limit_minor: NonNegativeMinor | None = None


class AccountUpdated(_Model):
    account_id: Identifier
    version: int = Field(ge=1)
    as_of: UtcDatetime
    customer: Customer | None = None
    open_invoices: list[OpenInvoice]
    balances: list[Balance]
    oldest_due_date: date | None = None
    max_days_past_due: int = 0
    risk: Risk
    credit_recommendation: CreditRecommendation | None = None


# ---------------------------------------------------------------- notifications and deliveries


class Recipient(_Model):
    email: Email | None = None
    phone: Phone | None = None
    timezone: Timezone

    @model_validator(mode="after")
    def _address(self) -> Recipient:
        if not self.email and not self.phone:
            raise ValueError("a recipient needs an email or a phone")
        return self


class NotificationRequested(_Model):
    notification_id: Identifier
    case_id: Identifier
    account_id: Identifier
    channel: Literal["email", "sms"]
    template: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    locale: Language
    recipient: Recipient
    variables: dict[str, Any] = {}
    not_before: UtcDatetime | None = None
    expires_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _channel_address(self) -> NotificationRequested:
        if self.channel == "email" and not self.recipient.email:
            raise ValueError("an email notification needs recipient.email")
        if self.channel == "sms" and not self.recipient.phone:
            raise ValueError("an sms notification needs recipient.phone")
        return self


DeliveryStatus = Literal["pending", "sent", "delivered", "failed", "deferred", "suppressed"]


class DeliveryUpdated(_Model):
    notification_id: Identifier
    case_id: Identifier
    account_id: Identifier | None = None
    channel: Literal["email", "sms"] | None = None
    status: DeliveryStatus
    reason: str | None = Field(default=None, max_length=500)
    provider_message_id: str | None = None
    at: UtcDatetime


# ------------------------------------------------------------------- collections.events.v1


class CaseEvent(_Model):
    """The payload of every ``collections.*`` event on ``collections.events.v1``.

    Which optional fields are set depends on the type (a fee has an amount, a dispute its
    invoices); ``case_id`` and ``account_id`` are always there.
    """

    case_id: Identifier
    account_id: Identifier
    stage: str | None = None
    previous_stage: str | None = None
    status: str | None = None
    currency: Currency | None = None
    amount_minor: MinorUnits | None = None
    invoice_ids: list[str] | None = None
    reference_id: str | None = None
    due_date: date | None = None
    reason: str | None = Field(default=None, max_length=1000)
    actor: str | None = None


CASE_EVENT_TYPES = (
    "collections.case.opened",
    "collections.case.stage_changed",
    "collections.case.resolved",
    "collections.case.written_off",
    "collections.case.handed_off",
    "collections.call_task.created",
    "collections.promise.made",
    "collections.promise.kept",
    "collections.promise.broken",
    "collections.payment_plan.created",
    "collections.payment_plan.installment_missed",
    "collections.payment_plan.completed",
    "collections.dispute.opened",
    "collections.dispute.resolved",
    "collections.late_fee.assessed",
    "collections.credit_hold.placed",
    "collections.credit_hold.lifted",
)

LEDGER_MODELS: dict[str, type[BaseModel]] = {
    "ar.customer.upserted": Customer,
    "ar.invoice.issued": InvoiceIssued,
    "ar.invoice.adjusted": InvoiceAdjusted,
    "ar.invoice.cancelled": InvoiceCancelled,
    "ar.credit_note.issued": CreditNoteIssued,
    "ar.payment.received": PaymentReceived,
    "ar.payment.reversed": PaymentReversed,
}

EVENT_MODELS: dict[str, type[BaseModel]] = {
    **LEDGER_MODELS,
    "ar.account.updated": AccountUpdated,
    "collections.notification.requested": NotificationRequested,
    "collections.delivery.updated": DeliveryUpdated,
    **dict.fromkeys(CASE_EVENT_TYPES, CaseEvent),
}


class UnknownEventType(ValueError):
    pass


def parse_data(event: CloudEvent) -> BaseModel:
    """Validate ``event.data`` into the model for its type.

    Raises :class:`UnknownEventType` for a type this version does not know and pydantic's
    ``ValidationError`` for a payload that does not fit. Checks that ``subject``, when the
    payload names an account, is that account (the Kafka key and the payload must agree).
    """
    model = EVENT_MODELS.get(event.type)
    if model is None:
        raise UnknownEventType(f"unknown event type {event.type!r}")
    data = model.model_validate(event.data)
    account_id = getattr(data, "account_id", None)
    if account_id is not None and event.subject is not None and event.subject != account_id:
        raise ValueError(f"subject {event.subject!r} differs from data.account_id {account_id!r}")
    return data


__all__ = [
    "CASE_EVENT_TYPES",
    "EVENT_MODELS",
    "LEDGER_MODELS",
    "AccountUpdated",
    "Allocation",
    "Balance",
    "Buckets",
    "CaseEvent",
    "Consent",
    "CreditNoteIssued",
    "CreditRecommendation",
    "Customer",
    "DeliveryUpdated",
    "InvoiceAdjusted",
    "InvoiceCancelled",
    "InvoiceIssued",
    "NotificationRequested",
    "OpenInvoice",
    "PaymentReceived",
    "PaymentReversed",
    "Reason",
    "Recipient",
    "Risk",
    "Terms",
    "UnknownEventType",
    "ValidationError",
    "parse_data",
]
