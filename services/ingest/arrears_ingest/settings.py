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
