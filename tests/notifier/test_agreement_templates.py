"""The case manager's written agreements (promise and payment-plan confirmations) and its thank-you
render in every locale and channel, stating the amounts and dates."""

from __future__ import annotations

from typing import Any

import pytest

from arrears_notifier.templates.render import Renderer

BASE: dict[str, Any] = {
    "customer_name": "Erika Mustermann",
    "invoices": [],
    "totals": [],
    "total_due": "",
    "max_days_past_due": 0,
    "payment_link": "https://pay.example.com/ACC-1?case=c-1",
    "unsubscribe_link": "https://arrears.example/v1/unsubscribe?token=t",
}
PROMISE = {"promise": {"currency": "EUR", "amount_minor": 50000, "amount": "€500.00", "date": "2026-12-15"}}
PLAN = {
    "plan": {
        "currency": "EUR",
        "total": "€900.00",
        "installments": [
            {"seq": 1, "due_date": "2026-12-01", "amount_minor": 30000, "amount": "€300.00", "status": "pending"},
            {"seq": 2, "due_date": "2027-01-01", "amount_minor": 60000, "amount": "€600.00", "status": "pending"},
        ],
    }
}


@pytest.mark.parametrize("locale", ["en", "de", "fr"])
@pytest.mark.parametrize("channel", ["email", "sms"])
def test_agreements_state_amounts_and_dates(locale: str, channel: str) -> None:
    renderer = Renderer()
    promise = renderer.render("promise_confirmation", locale, channel, {**BASE, **PROMISE})
    assert "€500.00" in promise.text
    assert "2026" in promise.text
    plan = renderer.render("payment_plan_confirmation", locale, channel, {**BASE, **PLAN})
    assert "€900.00" in plan.text
    if channel == "email":
        assert "€300.00" in plan.text and "€600.00" in plan.text
        assert plan.html is not None and "€600.00" in plan.html
        assert promise.subject and plan.subject
    thanks = renderer.render("thank_you", locale, channel, {**BASE})
    assert thanks.text.strip()
    if channel == "sms":
        assert "STOP" in thanks.text
    else:
        assert "unsubscribe" in thanks.text.lower() or "abmelden" in thanks.text.lower() or "désabonner" in thanks.text


def test_compiled_templates_are_reused_and_the_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from arrears_notifier.templates import render

    renderer = Renderer()
    variables = {"customer_name": "A", "max_days_past_due": 9, "total_due": "€1.00", "payment_link": "p"}
    first = renderer._templates("overdue_polite", "de-AT", "sms")
    assert renderer._templates("overdue_polite", "de-AT", "sms") is first
    monkeypatch.setattr(render, "MAX_COMPILED", 3)
    for n in range(10):
        renderer.render("overdue_polite", f"en-X{n}", "sms", variables)
        assert len(renderer._compiled) <= 3
