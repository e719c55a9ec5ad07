from __future__ import annotations

from pydantic import Field

from arrears_shared.settings import CommonSettings


class IngestSettings(CommonSettings):
    http_port: int = Field(default=8001, validation_alias="ARREARS_INGEST_PORT", description="HTTP port.")
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024,
        validation_alias="ARREARS_INGEST_MAX_BODY_BYTES",
        description="Largest request body accepted.",
    )
    max_batch: int = Field(
        default=1000,
        validation_alias="ARREARS_INGEST_MAX_BATCH",
        description="Most events one POST /v1/events may carry.",
    )
    auth_required: bool = Field(
        default=True,
        validation_alias="ARREARS_INGEST_AUTH_REQUIRED",
        description="Require a per-source API key on /v1 (create one with `arrears-ingest keys create`). "
        "The local development stack (`arrears up`) turns it off.",
    )
    signature_tolerance_seconds: int = Field(
        default=300,
        ge=1,
        validation_alias="ARREARS_INGEST_SIGNATURE_TOLERANCE_SECONDS",
        description="How far a signed request's timestamp may be from the server's clock.",
    )
    default_terms_days: int = Field(
        default=30,
        ge=0,
        le=365,
        validation_alias="ARREARS_INGEST_DEFAULT_TERMS_DAYS",
        description="Days of credit for an invoice that states no due date and no payment terms.",
    )
    max_import_rows: int = Field(
        default=100_000,
        ge=1,
        validation_alias="ARREARS_INGEST_MAX_IMPORT_ROWS",
        description="Most rows (CSV) or transactions (camt) one file may carry.",
    )
    inbound_batch: int = Field(
        default=2000,
        ge=1,
        validation_alias="ARREARS_INGEST_INBOUND_BATCH",
        description="Most ar.inbound.v1 messages judged together in one transaction.",
    )
    inbound_consumers: int = Field(
        default=4,
        ge=1,
        le=12,
        validation_alias="ARREARS_INGEST_INBOUND_CONSUMERS",
        description="ar.inbound.v1 consumers in this process (they split the partitions and work in parallel).",
    )
    relay_batch: int = Field(
        default=5000,
        ge=100,
        validation_alias="ARREARS_INGEST_RELAY_BATCH",
        description="Most outbox rows the relay publishes per round trip.",
    )
    relay_parallel: int = Field(
        default=2,
        ge=1,
        le=8,
        validation_alias="ARREARS_INGEST_RELAY_PARALLEL",
        description="Outbox relay rounds this process runs at once, each over its own share of the outbox's shards "
        "(order per key is kept: a key's rows are in one shard).",
    )
