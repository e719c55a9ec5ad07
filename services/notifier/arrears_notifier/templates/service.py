"""Listing templates and previewing them with sample or given variables."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from arrears_notifier.templates.render import CHANNELS, Renderer, TemplateMissing
from arrears_shared.errors import NotFoundError, PermanentError
from arrears_shared.events.fields import Language
from arrears_shared.money import format_money


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    locale: Language = "en"
    channel: Literal["email", "sms"] = "email"
    variables: dict[str, Any] = Field(
        default_factory=dict, description="Values that replace the sample values of the same name."
    )


def sample_variables(locale: str, today: date) -> dict[str, Any]:
    amounts = [(123_450, "2026-0001"), (5_000, "2026-0002")]
    due = today - timedelta(days=10)
    return {
        "customer_name": "Sample Customer",
        "level": "overdue_7",
        "invoices": [
            {
                "number": number,
                "currency": "EUR",
                "open_minor": minor,
                "open": format_money(minor, "EUR", locale),
                "due_date": due.isoformat(),
                "days_past_due": 10,
            }
            for minor, number in amounts
        ],
        "totals": [{"currency": "EUR", "amount_minor": 128_450, "formatted": format_money(128_450, "EUR", locale)}],
        "total_due": format_money(128_450, "EUR", locale),
        "max_days_past_due": 10,
        "deadline": (today + timedelta(days=14)).isoformat(),
        "payment_link": "https://pay.example.com/accounts/SAMPLE",
        "unsubscribe_link": "https://notifier.example.com/v1/unsubscribe?token=SAMPLE",
    }


class TemplateService:
    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer

    def catalog(self) -> list[dict[str, Any]]:
        return self.renderer.catalog()

    def preview(self, name: str, request: PreviewRequest, today: date) -> dict[str, Any]:
        if not self.renderer.exists(name):
            raise NotFoundError(f"no template {name!r}")
        if request.channel not in CHANNELS:
            raise PermanentError(f"channel must be one of {', '.join(CHANNELS)}")
        variables = {**sample_variables(request.locale, today), **request.variables}
        try:
            rendered = self.renderer.render(name, request.locale, request.channel, variables)
        except TemplateMissing as exc:
            raise NotFoundError(str(exc)) from None
        except Exception as exc:  # an undefined variable or a bad value in the given variables
            raise PermanentError(f"the template cannot be rendered with these variables: {exc}") from None
        out: dict[str, Any] = {
            "template": name,
            "locale": request.locale,
            "channel": request.channel,
            "subject": rendered.subject,
            "text": rendered.text,
            "html": rendered.html,
        }
        if rendered.sms is not None:
            out["sms"] = {
                "encoding": rendered.sms.encoding,
                "units": rendered.sms.units,
                "segments": rendered.sms.segments,
            }
        return out
