from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from arrears_shared.settings import CommonSettings


class NotifierSettings(CommonSettings):
    http_port: int = Field(default=8004, validation_alias="ARREARS_NOTIFIER_PORT", description="HTTP port.")
    public_base_url: str = Field(
        default="http://127.0.0.1:8004",
        validation_alias="ARREARS_NOTIFIER_PUBLIC_URL",
        description="Base of unsubscribe links and provider callbacks.",
    )
    link_secret: str = Field(
        default="dev-only-change-me",
        validation_alias="ARREARS_NOTIFIER_LINK_SECRET",
        description="Signs unsubscribe links. Set a long random value in production.",
    )
    smtp_host: str = Field(default="127.0.0.1", validation_alias="ARREARS_SMTP_HOST")
    smtp_port: int = Field(default=1025, validation_alias="ARREARS_SMTP_PORT")
    smtp_starttls: bool = Field(default=False, validation_alias="ARREARS_SMTP_STARTTLS")
    smtp_username: str | None = Field(default=None, validation_alias="ARREARS_SMTP_USERNAME")
    smtp_password: str | None = Field(default=None, validation_alias="ARREARS_SMTP_PASSWORD")
    smtp_pool_size: int = Field(
        default=4,
        ge=1,
        validation_alias="ARREARS_SMTP_POOL_SIZE",
        description="SMTP connections kept open; also the most emails in flight at once.",
    )
    smtp_lookup_url: str | None = Field(
        default=None,
        validation_alias="ARREARS_SMTP_LOOKUP_URL",
        description="Base URL of a Mailpit-compatible message search API (GET /api/v1/search?query=message-id:…) "
        "that sees what the SMTP relay accepted. When set, an email left in flight by a crash is looked up by "
        "its Message-ID: found, it is recorded as sent; not found, it is sent once. Unset, such an email is never "
        "resent and is reported failed, outcome unknown.",
    )
    mail_from: str = Field(default="collections@arrears.example", validation_alias="ARREARS_MAIL_FROM")
    sms_api_base: str = Field(
        default="http://127.0.0.1:8025",
        validation_alias="ARREARS_SMS_API_BASE",
        description="Twilio-compatible API base URL.",
    )
    sms_account_sid: str = Field(default="ACdev", validation_alias="ARREARS_SMS_ACCOUNT_SID")
    sms_auth_token: str = Field(default="dev-token", validation_alias="ARREARS_SMS_AUTH_TOKEN")
    sms_from: str = Field(default="+15005550006", validation_alias="ARREARS_SMS_FROM")
    window_start_hour: int = Field(default=8, ge=0, le=23, validation_alias="ARREARS_CONTACT_WINDOW_START")
    window_end_hour: int = Field(default=21, ge=1, le=24, validation_alias="ARREARS_CONTACT_WINDOW_END")
    cap_per_7_days: int = Field(
        default=3,
        ge=1,
        validation_alias="ARREARS_CONTACT_CAP_PER_7_DAYS",
        description="Messages per account per channel in any rolling 7 days.",
    )
    dispatch_concurrency: int = Field(default=50, ge=1, validation_alias="ARREARS_NOTIFIER_CONCURRENCY")
    dispatch_poll_seconds: float = Field(default=1.0, gt=0, validation_alias="ARREARS_NOTIFIER_POLL_SECONDS")
    max_attempts: int = Field(default=6, ge=1, validation_alias="ARREARS_NOTIFIER_MAX_ATTEMPTS")
    stale_sending_seconds: float = Field(
        default=120.0,
        gt=0,
        validation_alias="ARREARS_NOTIFIER_STALE_SENDING_SECONDS",
        description="A send not recorded after this long belongs to a dead process and is reconciled. "
        "Keep it well above the provider timeouts.",
    )
    breaker_threshold: int = Field(
        default=5, ge=1, validation_alias="ARREARS_NOTIFIER_BREAKER_THRESHOLD", description="Failures in a row."
    )
    breaker_cool_down_seconds: float = Field(
        default=30.0, gt=0, validation_alias="ARREARS_NOTIFIER_BREAKER_COOL_DOWN_SECONDS"
    )
    sms_max_connections: int = Field(
        default=16,
        ge=1,
        validation_alias="ARREARS_SMS_MAX_CONNECTIONS",
        description="HTTP connections to the SMS provider; also the most SMS in flight at once.",
    )
    sms_timeout_seconds: float = Field(default=10.0, gt=0, validation_alias="ARREARS_SMS_TIMEOUT_SECONDS")
    after_close_templates: str = Field(
        default="thank_you",
        validation_alias="ARREARS_NOTIFIER_AFTER_CLOSE_TEMPLATES",
        description="Comma-separated templates still delivered after their case is resolved (the thank-you).",
    )

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.window_start_hour >= self.window_end_hour:
            raise ValueError("ARREARS_CONTACT_WINDOW_START must be before ARREARS_CONTACT_WINDOW_END")
        return self
