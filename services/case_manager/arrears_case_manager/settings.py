from __future__ import annotations

from pydantic import Field

from arrears_shared.settings import CommonSettings


class CaseSettings(CommonSettings):
    http_port: int = Field(default=8003, validation_alias="ARREARS_CASES_PORT", description="HTTP port.")
    policy_file: str | None = Field(
        default=None,
        validation_alias="ARREARS_CASES_POLICY_FILE",
        description="Escalation policy YAML; the built-in default ladder when unset.",
    )
    payment_link_template: str = Field(
        default="https://pay.example.com/{account_id}?case={case_id}",
        validation_alias="ARREARS_CASES_PAYMENT_LINK_TEMPLATE",
        description="Payment link put in every notification; {account_id} and {case_id} are filled in.",
    )
    sweep_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias="ARREARS_CASES_SWEEP_SECONDS",
        description="How often the timer sweeper looks for due cases.",
    )
    sweep_batch: int = Field(
        default=500,
        ge=1,
        le=10_000,
        validation_alias="ARREARS_CASES_SWEEP_BATCH",
        description="Due timers one sweep claims and fires together (one transaction, bulk writes) per replica.",
    )
    notification_ttl_hours: int = Field(
        default=72,
        ge=1,
        validation_alias="ARREARS_CASES_NOTIFICATION_TTL_HOURS",
        description="A notification not delivered within this time expires.",
    )
    auth_required: bool = Field(
        default=True,
        validation_alias="ARREARS_CASES_AUTH_REQUIRED",
        description="Require a bearer API key (arrears-cases keys create). Turn off only on a developer's machine.",
    )
