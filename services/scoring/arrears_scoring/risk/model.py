"""Scoring an account with a logistic model kept as plain data (coefficients, centers, caps).

``contribution`` of a feature is ``coef * (min(x, cap) - center)``: how far it pushed the
log-odds from a typical account. The reasons of a score are its largest contributions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

from arrears_shared.events.v1 import Reason, Risk, Tier


@dataclass(frozen=True)
class Feature:
    name: str
    coef: float
    center: float
    cap: float


@dataclass(frozen=True)
class RiskModel:
    version: str
    intercept: float
    features: tuple[Feature, ...]
    metrics: dict[str, Any]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RiskModel:
        return cls(
            version=str(raw["version"]),
            intercept=float(raw["intercept"]),
            features=tuple(
                Feature(f["name"], float(f["coef"]), float(f.get("center", 0.0)), float(f.get("cap", math.inf)))
                for f in raw["features"]
            ),
            metrics=dict(raw.get("metrics", {})),
        )

    @classmethod
    def default(cls) -> RiskModel:
        text = resources.files("arrears_scoring.risk").joinpath("default_model.json").read_text()
        return cls.from_dict(json.loads(text))

    def score(self, values: dict[str, float], thresholds: tuple[float, float, float]) -> Risk:
        contributions = {f.name: f.coef * (min(values.get(f.name, f.center), f.cap) - f.center) for f in self.features}
        logit = self.intercept + sum(contributions.values())
        probability = 1.0 / (1.0 + math.exp(-logit))
        reasons = sorted(contributions.items(), key=lambda kv: abs(kv[1]), reverse=True)[:3]
        return Risk(
            probability=round(probability, 4),
            tier=tier_of(probability, thresholds),
            model_version=self.version,
            reasons=[Reason(feature=k, contribution=round(v, 4)) for k, v in reasons if v != 0],
        )


def tier_of(probability: float, thresholds: tuple[float, float, float]) -> Tier:
    medium, high, critical = thresholds
    if probability >= critical:
        return "critical"
    if probability >= high:
        return "high"
    if probability >= medium:
        return "medium"
    return "low"
