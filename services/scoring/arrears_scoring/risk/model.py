"""A logistic late-payment model kept as plain data (coefficients, centers, caps).

``contribution`` of a feature is ``coef * (min(x, cap) - center)``: how far it pushed the
log-odds from a typical invoice. The reasons of a score are its largest contributions. Features
marked ``"source": "prior"`` are set by hand (facts the training data cannot show, such as days
past due today); ``"trained"`` ones come from ``arrears-scoring train``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Any

import numpy as np

from arrears_shared.events.v1 import Reason, Risk, Tier


@dataclass(frozen=True)
class Feature:
    name: str
    coef: float
    center: float
    cap: float
    source: str = "trained"

    def contribution(self, value: float) -> float:
        return self.coef * (min(value, self.cap) - self.center)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "coef": self.coef, "center": self.center, "source": self.source}
        if math.isfinite(self.cap):
            out["cap"] = self.cap
        return out


@dataclass(frozen=True)
class RiskModel:
    version: str
    intercept: float
    features: tuple[Feature, ...]
    metrics: dict[str, Any]
    description: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RiskModel:
        return cls(
            version=str(raw["version"]),
            intercept=float(raw["intercept"]),
            features=tuple(
                Feature(
                    f["name"],
                    float(f["coef"]),
                    float(f.get("center", 0.0)),
                    float(f.get("cap", math.inf)),
                    str(f.get("source", "trained")),
                )
                for f in raw["features"]
            ),
            metrics=dict(raw.get("metrics", {})),
            description=str(raw.get("description", "")),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "description": self.description,
            "intercept": self.intercept,
            "features": [f.as_dict() for f in self.features],
            "metrics": self.metrics,
        }

    @classmethod
    def default(cls) -> RiskModel:
        text = resources.files("arrears_scoring.risk").joinpath("default_model.json").read_text()
        return cls.from_dict(json.loads(text))

    def feature(self, name: str) -> Feature | None:
        return next((f for f in self.features if f.name == name), None)

    @cached_property
    def _terms(self) -> tuple[tuple[str, float, float, float], ...]:
        return tuple((f.name, f.coef, f.center, f.cap) for f in self.features)

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @cached_property
    def _columns(self) -> tuple[np.ndarray[Any, np.dtype[np.float64]], ...]:
        coef, center, cap = (np.array([t[k] for t in self._terms], dtype=np.float64) for k in (1, 2, 3))
        return coef, center, cap

    def row(self, values: dict[str, float]) -> list[float]:
        """``values`` in the order of :attr:`names`; a feature it lacks at its center (contributing
        nothing, as in :meth:`contributions`)."""
        get = values.get
        return [get(name, center) for name, _, center, _ in self._terms]

    def score_rows(self, rows: list[list[float]], sizes: list[int]) -> BatchScores:
        """Many feature rows (:meth:`row`) scored at once, as one matrix: the open invoices of every
        account published together, ``sizes`` consecutive rows per account. Each row's logit and
        ``days_past_due`` contribution, and each account's mean contribution per feature, are bit
        for bit those of :meth:`contributions`, ``intercept + sum(...)`` and
        :func:`risk_from_contributions` row by row: the same operations in the same order (the sum
        over the features and the mean over an account's rows are accumulated one column or one row
        at a time, never pairwise)."""
        coef, center, cap = self._columns
        width = len(self._terms)
        x = np.array(rows, dtype=np.float64).reshape(len(rows), width)
        contributions = coef * (np.minimum(x, cap) - center)
        total = np.zeros(len(rows), dtype=np.float64)
        for j in range(width):
            total += contributions[:, j]
        logits = self.intercept + total
        dpd = self.names.index("days_past_due") if "days_past_due" in self.names else None
        counts = np.array(sizes, dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        shares = contributions / np.repeat(counts, counts).astype(np.float64)[:, None]
        means = np.zeros((len(sizes), width), dtype=np.float64)
        for k in range(int(counts.max(initial=0))):
            groups = np.nonzero(counts > k)[0]
            means[groups] += shares[starts[groups] + k]
        return BatchScores(
            logits=logits.tolist(),
            dpd=contributions[:, dpd].tolist() if dpd is not None else None,
            means=means.tolist(),
        )

    def contributions(self, values: dict[str, float]) -> dict[str, float]:
        """Each feature's :meth:`Feature.contribution` (the same arithmetic, without a call per
        feature: this runs for every open invoice of every published account)."""
        get = values.get
        return {name: coef * (min(get(name, center), cap) - center) for name, coef, center, cap in self._terms}

    def logit(self, values: dict[str, float]) -> float:
        return self.intercept + sum(self.contributions(values).values())

    def probability(self, values: dict[str, float]) -> float:
        return sigmoid(self.logit(values))

    def score(self, values: dict[str, float], thresholds: tuple[float, float, float]) -> Risk:
        """One feature vector's risk (kept for callers that score a single vector)."""
        return risk_of([values], self, thresholds)


@dataclass(frozen=True)
class BatchScores:
    """:meth:`RiskModel.score_rows`: per row its logit and ``days_past_due`` contribution (None when
    the model has no such feature); per account its mean contribution of each feature."""

    logits: list[float]
    dpd: list[float] | None
    means: list[list[float]]


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def risk_of(vectors: list[dict[str, float]], model: RiskModel, thresholds: tuple[float, float, float]) -> Risk:
    """The account's risk: the mean late probability of its open invoices (each invoice one
    vector), with the mean contributions as reasons (the three largest in size)."""
    return risk_from_contributions([model.contributions(v) for v in vectors], model, thresholds)


def risk_from_contributions(
    per_invoice: list[dict[str, float]], model: RiskModel, thresholds: tuple[float, float, float]
) -> Risk:
    """:func:`risk_of` from each invoice's contributions, already computed."""
    logits = [model.intercept + sum(c.values()) for c in per_invoice]
    n = len(per_invoice)
    totals: dict[str, float] = {}
    for name in per_invoice[0]:
        total = 0.0
        for contributions in per_invoice:
            total = total + contributions[name] / n
        totals[name] = total
    return risk_from_means(list(totals.items()), logits, model, thresholds)


def risk_from_means(
    means: list[tuple[str, float]], logits: list[float], model: RiskModel, thresholds: tuple[float, float, float]
) -> Risk:
    """The account's risk from its invoices' logits and its mean contribution per feature (in the
    model's order): the mean probability, and the three largest means in size as reasons."""
    probabilities = [sigmoid(x) for x in logits]
    probability = sum(probabilities) / len(probabilities)
    reasons = sorted(means, key=lambda kv: abs(kv[1]), reverse=True)[:3]
    return Risk(
        probability=round(probability, 4),
        tier=tier_of(probability, thresholds),
        model_version=model.version,
        reasons=[Reason(feature=k, contribution=rounded) for k, v in reasons if (rounded := round(v, 4)) != 0],
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
