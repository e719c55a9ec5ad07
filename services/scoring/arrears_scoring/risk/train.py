"""Fitting and backtesting the late-payment model on settled invoices, time-ordered.

Each invoice's features come from :func:`invoice_features` with the history known on its issue
date (invoices of the same account settled before it). The split is by time: the model is fitted
on invoices issued and settled before the cutoff and tested on invoices issued on or after it,
so nothing from the test period leaks into training. scikit-learn does the fitting; the result
is written as plain data (intercept, coefficients, centers, caps), never as a pickle.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score

from arrears_scoring.risk.features import TRAINED_FEATURES, Record, invoice_features, known_before
from arrears_scoring.risk.model import Feature, RiskModel


class BadCsv(ValueError):
    pass


def _day(text: str) -> date:
    return datetime.strptime(text.strip(), "%m/%d/%Y").date()


def read_ibm_csv(path: Path) -> list[Record]:
    """The IBM "Accounts Receivable" sample's columns (customerID, invoiceNumber, InvoiceDate,
    DueDate, InvoiceAmount, Disputed, SettledDate). Amounts are exact (Decimal → cents)."""
    out: list[Record] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"customerID", "invoiceNumber", "InvoiceDate", "DueDate", "InvoiceAmount", "SettledDate"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise BadCsv(f"{path.name}: missing columns {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                cents = Decimal(row["InvoiceAmount"]) * 100
                if cents != cents.to_integral_value():
                    raise BadCsv(f"{path.name}:{line}: InvoiceAmount has more than 2 decimals")
                out.append(
                    Record(
                        account_id=row["customerID"],
                        invoice_id=row["invoiceNumber"],
                        issue_date=_day(row["InvoiceDate"]),
                        due_date=_day(row["DueDate"]),
                        settled_date=_day(row["SettledDate"]),
                        amount_minor=int(cents),
                        disputed=row.get("Disputed", "No").strip().lower() == "yes",
                    )
                )
            except (ValueError, InvalidOperation) as exc:
                if isinstance(exc, BadCsv):
                    raise
                raise BadCsv(f"{path.name}:{line}: {exc}") from None
    return out


@dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray
    issued: list[date]
    settled: list[date]
    accounts: list[str] = field(default_factory=list)


def build_dataset(records: Iterable[Record], names: Sequence[str] | None = None) -> Dataset:
    """Features of every record from its account's history known on its issue date: the columns
    ``names`` (default :data:`LIVE_FEATURES`), ``disputed`` the invoice's dispute status."""
    columns = [n for n in (names or LIVE_FEATURES) if n != "disputed"]
    with_disputed = names is None or "disputed" in names
    by_account: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_account[r.account_id].append(r)
    rows: list[list[float]] = []
    labels: list[int] = []
    issued: list[date] = []
    settled: list[date] = []
    accounts: list[str] = []
    for account_id, recs in by_account.items():
        history = sorted((r.as_history() for r in recs), key=lambda h: (h.settled_date, h.issue_date))
        for r in recs:
            open_at_issue = [
                o
                for o in recs
                if o.issue_date < r.issue_date and o.settled_date >= r.issue_date and o.invoice_id != r.invoice_id
            ]
            vec = invoice_features(
                known_before(history, r.issue_date),
                r.issue_date,
                r.due_date,
                r.amount_minor,
                [o.due_date for o in open_at_issue],
                open_amounts=[o.amount_minor for o in open_at_issue],
            )
            disputed = [1.0 if r.disputed else 0.0] if with_disputed else []
            rows.append([*(vec[name] for name in columns), *disputed])
            labels.append(1 if r.late else 0)
            issued.append(r.issue_date)
            settled.append(r.settled_date)
            accounts.append(account_id)
    return Dataset(np.array(rows, dtype=float), np.array(labels, dtype=int), issued, settled, accounts)


def default_cutoff(ds: Dataset, share: float = 0.7) -> date:
    ordered = sorted(ds.issued)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


def split(ds: Dataset, cutoff: date) -> tuple[np.ndarray, np.ndarray]:
    """Train: issued and settled before the cutoff. Test: issued on or after it."""
    train = np.array([i < cutoff and s < cutoff for i, s in zip(ds.issued, ds.settled, strict=True)])
    test = np.array([i >= cutoff for i in ds.issued])
    return train, test


# Issue-time features plus the invoice's dispute status, which scoring knows while the invoice
# is open (collections.dispute.opened) but which was not known on the day it was issued.
LIVE_FEATURES: tuple[str, ...] = (*TRAINED_FEATURES, "disputed")


def fit(
    x: np.ndarray,
    y: np.ndarray,
    version: str,
    names: Sequence[str] = LIVE_FEATURES,
    prior: RiskModel | None = None,
) -> RiskModel:
    """Logistic regression on capped, standardized features, written back in raw units."""
    if len(set(y.tolist())) < 2:
        raise ValueError("training needs both paid-on-time and paid-late invoices")
    caps = np.percentile(x, 99, axis=0)
    caps = np.where(caps > 0, caps, np.max(x, axis=0))
    xc = np.minimum(x, caps)
    center = xc.mean(axis=0)
    scale = xc.std(axis=0)
    scale[scale == 0] = 1.0
    clf = LogisticRegression(C=1.0, max_iter=1000)
    clf.fit((xc - center) / scale, y)
    coefs = clf.coef_[0] / scale
    features = [
        Feature(name, round(float(c), 6), round(float(m), 6), round(float(cap), 6), "trained")
        for name, c, m, cap in zip(names, coefs, center, caps, strict=True)
    ]
    priors = [f for f in (prior or RiskModel.default()).features if f.source == "prior" and f.name not in names]
    return RiskModel(
        version=version,
        intercept=round(float(clf.intercept_[0]), 6),
        features=tuple(features + priors),
        metrics={},
        description="Logistic regression (scikit-learn) on settled invoices, features known at issue; "
        "prior features set by hand.",
    )


def predict(model: RiskModel, x: np.ndarray, names: Sequence[str] = LIVE_FEATURES) -> np.ndarray:
    return np.array([model.probability(dict(zip(names, row, strict=True))) for row in x.tolist()])


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    edges = np.linspace(0, 1, bins + 1)
    for lo, hi in itertools.pairwise(edges):
        mask = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
        if mask.any():
            out.append(
                {
                    "bin_low": round(float(lo), 2),
                    "bin_high": round(float(hi), 2),
                    "count": int(mask.sum()),
                    "mean_predicted": round(float(p[mask].mean()), 4),
                    "observed_late": round(float(y[mask].mean()), 4),
                }
            )
    return out


def evaluate(model: RiskModel, x: np.ndarray, y: np.ndarray, names: Sequence[str] = LIVE_FEATURES) -> dict[str, Any]:
    p = predict(model, x, names)
    return {
        "auc": round(float(roc_auc_score(y, p)), 4) if len(set(y.tolist())) > 1 else None,
        "brier": round(float(brier_score_loss(y, p)), 4),
        "n": len(y),
        "late_rate": round(float(y.mean()), 4),
        "calibration": calibration(y, p),
    }


def backtest(records: Sequence[Record], cutoff: date | None, version: str) -> tuple[RiskModel, dict[str, Any]]:
    """Fit on what was settled before the cutoff, report on what was issued after it."""
    ds = build_dataset(records)
    cut = cutoff or default_cutoff(ds)
    train, test = split(ds, cut)
    issue_only = len(TRAINED_FEATURES)
    at_issue = fit(ds.x[train][:, :issue_only], ds.y[train], version, TRAINED_FEATURES)
    issue_report = evaluate(at_issue, ds.x[test][:, :issue_only], ds.y[test], TRAINED_FEATURES)
    model = fit(ds.x[train], ds.y[train], version)
    report = {
        "cutoff": cut.isoformat(),
        "train_n": int(train.sum()),
        **evaluate(model, ds.x[test], ds.y[test]),
        "issue_time_only": {k: v for k, v in issue_report.items() if k != "calibration"},
    }
    return model, report


def train_all(records: Sequence[Record], version: str) -> RiskModel:
    """The model to use from now on: fitted on every settled invoice, with a time-ordered holdout's
    metrics (the last 30% by issue date) recorded in it."""
    ds = build_dataset(records)
    _model, report = backtest(records, None, version)
    full = fit(ds.x, ds.y, version)
    metrics = {k: v for k, v in report.items() if k != "calibration"}
    metrics["train_n_final"] = len(ds.y)
    return RiskModel(full.version, full.intercept, full.features, metrics, full.description)


def plot_calibration(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = report["calibration"]
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.plot([c["mean_predicted"] for c in cal], [c["observed_late"] for c in cal], marker="o", label="model")
    ax.set_xlabel("predicted probability of paying late")
    ax.set_ylabel("observed share paid late")
    auc = report.get("auc")
    ax.set_title(f"Calibration (AUC {auc}, Brier {report['brier']}, n={report['n']})")
    ax.legend(loc="upper left")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def safe_float(value: float) -> float | None:
    return value if math.isfinite(value) else None
