"""Settings every service shares, read from the environment when a service starts (never at import)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def async_database_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` URLs and use the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("database URL must start with postgresql:// (or postgres://)")


class CommonSettings(BaseSettings):
    """Environment variables with the ``ARREARS_`` prefix (``ARREARS_DATABASE_URL`` ...)."""

    model_config = SettingsConfigDict(env_prefix="ARREARS_", extra="ignore", env_file=None)

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/arrears",
        validation_alias=AliasChoices("ARREARS_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL URL; each service keeps its tables in its own schema.",
    )
    database_pool_size: int = Field(default=10, ge=1, description="Connections kept in the pool.")
    kafka_bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Comma-separated host:port list.")
    kafka_security_protocol: str = Field(default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: str | None = Field(default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = Field(
        default=None,
        description="CA bundle (PEM) that signs the brokers' certificates (SSL, SASL_SSL); the system CAs when unset.",
    )
    kafka_enable_idempotence: bool = Field(
        default=False,
        description="Idempotent producer. Turn on with production Kafka; the embedded dev broker lacks it.",
    )
    kafka_consumer_batch: int = Field(default=500, ge=1, description="Most messages one consumer batch holds.")
    kafka_consumers: int = Field(
        default=1,
        ge=1,
        le=12,
        description=(
            "Kafka consumers each consumer group runs in this process. They split the group's partitions, so"
            " one applies a batch while another waits on the database; each holds a pooled connection."
        ),
    )
    kafka_max_retries: int = Field(default=3, ge=0, description="Attempts before a message goes to the DLQ.")
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    log_level: str = Field(default="INFO")
    clock_file: str | None = Field(
        default=None, description="Development and tests only: a file holding a clock offset in seconds."
    )
    outbox_poll_seconds: float = Field(default=0.2, gt=0, description="Outbox relay's idle poll interval.")
    outbox_relay: bool = Field(
        default=True,
        description=(
            "Run the outbox relay in this process. Turn off only where a role=relay process of the same service"
            " publishes the outbox, so the consumers and the relay use different cores."
        ),
    )
    role: Literal["all", "api", "worker", "relay"] = Field(
        default="all",
        description=(
            "What this process runs: all (HTTP API, consumers and background loops), api (HTTP API and the outbox"
            " relay only, so it can scale on CPU), worker (consumers, background loops and the relay; case_manager's"
            " worker serves only probes and metrics over HTTP) or relay (the outbox relay only, with probes and"
            " metrics over HTTP)."
        ),
    )

    @field_validator("database_url")
    @classmethod
    def _async_url(cls, value: str) -> str:
        return async_database_url(value)

    @model_validator(mode="after")
    def _relay_role_relays(self) -> CommonSettings:
        if self.role == "relay" and not self.outbox_relay:
            raise ValueError("role=relay runs only the outbox relay: it cannot have ARREARS_OUTBOX_RELAY=false")
        return self
