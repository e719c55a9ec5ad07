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

    def thresholds(self) -> tuple[float, float, float]:
        low, high, critical = (float(x) for x in self.tier_thresholds.split(","))
        if not 0 < low < high < critical < 1:
            raise ValueError("ARREARS_SCORING_TIER_THRESHOLDS must be three increasing probabilities")
        return low, high, critical
