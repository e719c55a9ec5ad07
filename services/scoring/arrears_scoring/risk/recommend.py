"""A credit recommendation per account, for the ERP to act on: keep terms, lower the limit,
or require prepayment, from the risk tier and the exposure against the credit limit."""

from __future__ import annotations

from arrears_shared.events.v1 import Balance, CreditRecommendation, Customer, Risk


def recommend(risk: Risk, customer: Customer | None, balances: list[Balance]) -> CreditRecommendation:
    limit = customer.credit_limit_minor if customer else None
    currency = customer.currency if customer else None
    exposure = sum(b.open_minor - b.credit_minor for b in balances if b.currency == currency) if currency else 0
    exposure = max(exposure, 0)
    utilization = exposure / limit if limit else None
    if risk.tier == "critical" or (risk.tier == "high" and utilization is not None and utilization >= 1):
        return CreditRecommendation(
            action="require_prepayment",
            reason=f"risk {risk.tier} (p={risk.probability:.2f})"
            + (f", exposure at {utilization:.0%} of the limit" if utilization is not None else ""),
        )
    if limit and (risk.tier == "high" or (risk.tier == "medium" and utilization is not None and utilization > 0.8)):
        suggested = int(limit * (1 - risk.probability))
        return CreditRecommendation(
            action="lower_limit",
            reason=f"risk {risk.tier} (p={risk.probability:.2f}), exposure at {utilization or 0:.0%} of the limit",
            suggested_limit_minor=suggested,
        )
    if risk.tier == "high":
        return CreditRecommendation(
            action="require_prepayment", reason=f"risk high (p={risk.probability:.2f}), no credit limit set"
        )
    return CreditRecommendation(action="keep_terms", reason=f"risk {risk.tier} (p={risk.probability:.2f})")
