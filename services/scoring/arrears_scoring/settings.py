from __future__ import annotations

from pydantic import Field

from arrears_shared.settings import CommonSettings


class ScoringSettings(CommonSettings):
    http_port: int = Field(default=8002, validation_alias="ARREARS_SCORING_PORT", description="HTTP port.")
    tier_thresholds: str = Field(
        default="0.25,0.5,0.75",
        validation_alias="ARREARS_SCORING_TIER_THRESHOLDS",
        description="Probabilities at which medium, high and critical start.",
    )

    escalation_level_days: str = Field(
        default="-3,0,1,7,14,30,60",
        validation_alias="ARREARS_SCORING_LEVEL_DAYS",
        description="Days past the oldest due date at which escalation levels start (re-age publishes on crossing).",
    )
    reage_check_seconds: float = Field(
        default=60.0,
        validation_alias="ARREARS_SCORING_REAGE_CHECK_SECONDS",
        description="How often to check for a new day.",
    )
    publish_seconds: float = Field(
        default=0.5,
        gt=0,
        validation_alias="ARREARS_SCORING_PUBLISH_SECONDS",
        description="How often changed accounts are published (events in between coalesce into one version).",
    )
    model_refresh_seconds: float = Field(
        default=60.0,
        validation_alias="ARREARS_SCORING_MODEL_REFRESH_SECONDS",
        description="How often to reload the model.",
    )

    def level_offsets(self) -> list[int]:
        return sorted(int(x) for x in self.escalation_level_days.split(","))

    def thresholds(self) -> tuple[float, float, float]:
        low, high, critical = (float(x) for x in self.tier_thresholds.split(","))
        if not 0 < low < high < critical < 1:
            raise ValueError("ARREARS_SCORING_TIER_THRESHOLDS must be three increasing probabilities")
        return low, high, critical
