"""Honest model selection for the late-payment model: a fixed candidate space, chosen by
time-ordered validation inside the training period only; the test period is scored once.

Protocol (``arrears-scoring select-model``; docs/scoring.md "Model selection"):

1. The outer split is :func:`~arrears_scoring.risk.train.split`'s, unchanged: train = invoices
   issued and settled before the cutoff, test = invoices issued on or after it.
2. Inside the training period, three expanding folds: inner cutoffs at the 50%, 65% and 80%
   quantiles of the training invoices' issue dates; fold *k* fits on the training invoices issued
   and settled before cutoff *k* and validates on those issued from cutoff *k* up to the next one
   (the last fold: to the end of the training period).
3. Every candidate of :data:`CANDIDATES` (fixed before any was scored, not tuned to any split: 44
   forms on each of the :data:`FEATURE_SETS`) is scored by its mean validation AUC over the folds;
   the highest wins, unless candidates within :data:`TIE_AUC` of it have fewer parameters (then
   the fewest-parameter one of those). The same rule over the ``linear`` candidates (the stored
   model's form) gives the one that can ship.
4. Only these are refitted on the whole training period and scored on the test period, once. The
   first shipped model's specification (:data:`SHIPPED`) is scored beside them for comparison.

This is a research tool: the candidates are scikit-learn estimators, never stored. A winner that
is kept in production is written as plain data by :mod:`arrears_scoring.risk.train`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from threadpoolctl import threadpool_limits

from arrears_scoring.risk.features import BASE_FEATURES, LEDGER_FEATURES, Record
from arrears_scoring.risk.train import Dataset, build_dataset, default_cutoff, split

Matrix = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

INNER_QUANTILES: tuple[float, ...] = (0.5, 0.65, 0.8)
C_GRID: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
L1_C_GRID: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
# A candidate within this of the best mean validation AUC wins instead if it has fewer parameters.
TIE_AUC = 0.001

# Non-negative, unbounded day/amount/count features: the ones a log1p transform is for.
LOG_FEATURES: tuple[str, ...] = (
    "past_mean_days_late",
    "last_days_late",
    "amount_ratio",
    "days_since_last_settlement",
    "terms_days",
    "open_at_issue",
    "overdue_at_issue",
    "max_days_overdue_at_issue",
    "past_invoices_log",
    "past_sd_signed_late",
    "open_amount_ratio",
    "overdue_amount_ratio",
)
BINARY_FEATURES: tuple[str, ...] = ("no_history", "disputed")
BIN_QUANTILES: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)

# The feature sets a candidate is fitted on: ``base`` (the first model's 13 issue-time features and
# the dispute status) and ``ledger`` (those plus :data:`LEDGER_FEATURES`).
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "base": (*BASE_FEATURES, "disputed"),
    "ledger": (*BASE_FEATURES, *LEDGER_FEATURES, "disputed"),
}
ALL_COLUMNS: tuple[str, ...] = FEATURE_SETS["ledger"]


class Estimator(Protocol):
    def fit(self, x: Matrix, y: npt.NDArray[np.int_]) -> Estimator: ...

    def predict(self, x: Matrix) -> Matrix: ...

    def n_params(self) -> int: ...


@dataclass(frozen=True)
class Candidate:
    """One point of the candidate space. ``family``: ``linear`` (the stored model's form),
    ``log`` (plus log1p of :data:`LOG_FEATURES`), ``pairs`` (``log`` plus every pairwise product
    of the standardized base features), ``bins`` (plus one-hot quintile bins of every non-binary
    feature) or ``hgb`` (scikit-learn's HistGradientBoostingClassifier); ``features``: a key of
    :data:`FEATURE_SETS`."""

    family: str
    penalty: str = "l2"
    c: float = 1.0
    leaves: int = 0
    learning_rate: float = 0.0
    iterations: int = 0
    features: str = "base"

    @property
    def name(self) -> str:
        prefix = "" if self.features == "base" else f"{self.features} "
        if self.family == "hgb":
            return f"{prefix}hgb leaves={self.leaves} lr={self.learning_rate} iter={self.iterations}"
        return f"{prefix}{self.family} {self.penalty} C={self.c:g}"

    @property
    def columns(self) -> list[int]:
        """The candidate's columns of a dataset built with :data:`ALL_COLUMNS`."""
        return [ALL_COLUMNS.index(n) for n in FEATURE_SETS[self.features]]

    def estimator(self, names: Sequence[str] | None = None) -> Estimator:
        names = FEATURE_SETS[self.features] if names is None else names
        if self.family == "hgb":
            return Boosted(self.leaves, self.learning_rate, self.iterations)
        return Linear(
            names,
            self.c,
            logs=self.family in ("log", "pairs"),
            pairs=self.family == "pairs",
            bins=self.family == "bins",
            l1=self.penalty == "l1",
        )


def _candidates() -> tuple[Candidate, ...]:
    """The same 44 forms on each feature set (88 candidates)."""
    out: list[Candidate] = []
    for fs in FEATURE_SETS:
        out += [Candidate(f, "l2", c, features=fs) for f in ("linear", "log", "pairs", "bins") for c in C_GRID]
        out += [Candidate("pairs", "l1", c, features=fs) for c in L1_C_GRID]
        out += [
            Candidate("hgb", leaves=leaves, learning_rate=lr, iterations=it, features=fs)
            for leaves, lr, it in itertools.product((4, 8, 16), (0.05, 0.1), (100, 300))
        ]
    return tuple(out)


CANDIDATES: tuple[Candidate, ...] = _candidates()
# The first shipped model's form (before the ledger features), scored beside the winner for
# comparison: the base features capped at their 99th percentile, standardized, L2, C=1.
SHIPPED = Candidate("linear", "l2", 1.0)


class Linear:
    """Logistic regression on capped features (99th percentile, as train.fit), optionally with
    log1p transforms, quintile bins and pairwise products, standardized."""

    def __init__(self, names: Sequence[str], c: float, *, logs: bool, pairs: bool, bins: bool, l1: bool) -> None:
        self.c, self.logs, self.pairs, self.bins, self.l1 = c, logs, pairs, bins, l1
        self.log_cols = [i for i, n in enumerate(names) if n in LOG_FEATURES]
        self.bin_cols = [i for i, n in enumerate(names) if n not in BINARY_FEATURES]
        self.n_base = len(names)

    def _design(self, x: Matrix) -> Matrix:
        xc = np.minimum(x, self.caps)
        cols = [xc]
        if self.logs:
            cols.append(np.log1p(np.maximum(xc[:, self.log_cols], 0.0)))
        if self.bins:
            for j, edges in zip(self.bin_cols, self.edges, strict=True):
                which = np.searchsorted(edges, xc[:, j], side="right")
                cols.append(np.eye(len(edges) + 1)[which][:, 1:])
        return np.hstack(cols)

    def _pairs(self, z: Matrix) -> Matrix:
        base = z[:, : self.n_base]
        products = [base[:, i] * base[:, j] for i, j in itertools.combinations(range(self.n_base), 2)]
        return np.hstack([z, np.column_stack(products)])

    def _z(self, x: Matrix) -> Matrix:
        z: Matrix = (self._design(x) - self.mean) / self.std
        if self.pairs:
            z = (self._pairs(z) - self.mean2) / self.std2
        return z

    def fit(self, x: Matrix, y: npt.NDArray[np.int_]) -> Linear:
        caps = np.percentile(x, 99, axis=0)
        self.caps = np.where(caps > 0, caps, np.max(x, axis=0))
        xc = np.minimum(x, self.caps)
        self.edges = [np.unique(np.quantile(xc[:, j], BIN_QUANTILES)) for j in self.bin_cols]
        design = self._design(x)
        self.mean, self.std = design.mean(axis=0), design.std(axis=0)
        self.std[self.std == 0] = 1.0
        z = (design - self.mean) / self.std
        if self.pairs:
            z = self._pairs(z)
            self.mean2, self.std2 = z.mean(axis=0), z.std(axis=0)
            self.std2[self.std2 == 0] = 1.0
            z = (z - self.mean2) / self.std2
        if self.l1:
            self.clf = LogisticRegression(C=self.c, l1_ratio=1.0, solver="liblinear", max_iter=5000)
        else:
            self.clf = LogisticRegression(C=self.c, max_iter=5000)
        self.clf.fit(z, y)
        return self

    def predict(self, x: Matrix) -> Matrix:
        return np.asarray(self.clf.predict_proba(self._z(x))[:, 1], dtype=np.float64)

    def n_params(self) -> int:
        return int(np.count_nonzero(self.clf.coef_)) + 1


class Boosted:
    def __init__(self, leaves: int, learning_rate: float, iterations: int) -> None:
        self.leaves, self.iterations = leaves, iterations
        self.clf = HistGradientBoostingClassifier(
            max_leaf_nodes=leaves,
            learning_rate=learning_rate,
            max_iter=iterations,
            min_samples_leaf=20,
            early_stopping=False,
            random_state=0,
        )

    def fit(self, x: Matrix, y: npt.NDArray[np.int_]) -> Boosted:
        self.clf.fit(x, y)
        return self

    def predict(self, x: Matrix) -> Matrix:
        return np.asarray(self.clf.predict_proba(x)[:, 1], dtype=np.float64)

    def n_params(self) -> int:
        return self.leaves * self.iterations


def inner_folds(ds: Dataset, train: Mask, quantiles: Sequence[float] = INNER_QUANTILES) -> list[tuple[Mask, Mask]]:
    """Expanding time-ordered folds inside the training period: (fit, validate) masks, each a
    subset of ``train``."""
    issued = np.array([d.toordinal() for d in ds.issued])
    settled = np.array([d.toordinal() for d in ds.settled])
    cuts = [int(np.ceil(v)) for v in np.quantile(issued[train], list(quantiles))]
    ends = [*cuts[1:], int(issued.max()) + 1]
    return [
        (train & (issued < cut) & (settled < cut), train & (issued >= cut) & (issued < end))
        for cut, end in zip(cuts, ends, strict=True)
    ]


def winner_of(rows: Sequence[dict[str, Any]]) -> int:
    """The ``_order`` of the winning row (``_mean``: mean validation AUC; ``params``): the best
    mean, unless rows within :data:`TIE_AUC` of it have fewer parameters (then the fewest-parameter
    one of those, the better mean first)."""
    top = max(r["_mean"] for r in rows)
    near = [r for r in rows if r["_mean"] >= top - TIE_AUC]
    return int(min(near, key=lambda r: (r["params"], -r["_mean"], r["_order"]))["_order"])


def rank_auc(y: npt.NDArray[np.int_], p: Matrix) -> float:
    """ROC AUC by ranks (ties averaged), as roc_auc_score, without its per-call overhead."""
    positives = y == 1
    n1 = int(positives.sum())
    n0 = len(y) - n1
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties get their mean rank
    return float((ranks[positives].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def paired_bootstrap(
    y: npt.NDArray[np.int_],
    p_a: Matrix,
    p_b: Matrix,
    accounts: Sequence[str],
    *,
    resamples: int = 1000,
    target: float = 0.93,
    seed: int = 0,
) -> dict[str, Any]:
    """How much the test AUC of model A, and B's paired difference from it, move when the test
    period is resampled: by invoice, and by customer (their invoices are not independent)."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(np.asarray(accounts) == a) for a in sorted(set(accounts))]
    out: dict[str, Any] = {"resamples": resamples}
    for mode in ("invoice", "customer"):
        a_aucs: list[float] = []
        diffs: list[float] = []
        for _ in range(resamples):
            if mode == "invoice":
                i = rng.integers(0, len(y), len(y))
            else:
                i = np.concatenate([groups[k] for k in rng.integers(0, len(groups), len(groups))])
            if len(set(y[i].tolist())) < 2:
                continue
            a_auc = rank_auc(y[i], p_a[i])
            a_aucs.append(a_auc)
            diffs.append(rank_auc(y[i], p_b[i]) - a_auc)
        a = np.array(a_aucs)
        out[mode] = {
            "a_auc_95": [round(float(v), 4) for v in np.percentile(a, [2.5, 97.5])],
            "a_auc_sd": round(float(a.std()), 4),
            f"a_share_at_least_{target:g}": round(float((a >= target).mean()), 3),
            "b_minus_a_95": [round(float(v), 4) for v in np.percentile(diffs, [2.5, 97.5])],
        }
    return out


def _scores(y: npt.NDArray[np.int_], p: Matrix) -> tuple[float, float]:
    return float(roc_auc_score(y, p)), float(brier_score_loss(y, p))


def select(
    records: Sequence[Record],
    cutoff: date | None = None,
    candidates: Sequence[Candidate] = CANDIDATES,
    *,
    score_test: bool = True,
) -> dict[str, Any]:
    """Run the protocol; the report lists every candidate's validation scores (best first), the
    winner, the best candidate of the stored model's form (``linear``: the one to ship), and
    their and the first shipped form's scores on the test period. ``score_test=False``: the
    validation alone, the test period left unseen (for developing features)."""
    # One thread: the fits are small, and spare OpenMP/BLAS threads only spin on a shared machine.
    with threadpool_limits(limits=1):
        return _select(records, cutoff, candidates, score_test)


def _select(
    records: Sequence[Record], cutoff: date | None, candidates: Sequence[Candidate], score_test: bool
) -> dict[str, Any]:
    ds = build_dataset(records, ALL_COLUMNS)
    cut = cutoff or default_cutoff(ds)
    train, test = split(ds, cut)
    folds = inner_folds(ds, train)
    for fit_mask, val_mask in folds:
        if len(set(ds.y[fit_mask].tolist())) < 2 or len(set(ds.y[val_mask].tolist())) < 2:
            raise ValueError("an inner fold lacks paid-on-time or paid-late invoices: too little history")
    table: list[dict[str, Any]] = []
    for order, candidate in enumerate(candidates):
        aucs: list[float] = []
        briers: list[float] = []
        params = 0
        x = ds.x[:, candidate.columns]
        for fit_mask, val_mask in folds:
            est = candidate.estimator().fit(x[fit_mask], ds.y[fit_mask])
            auc, brier = _scores(ds.y[val_mask], est.predict(x[val_mask]))
            aucs.append(auc)
            briers.append(brier)
            params = est.n_params()
        table.append(
            {
                "candidate": candidate.name,
                "validation_auc": round(float(np.mean(aucs)), 4),
                "validation_auc_folds": [round(a, 4) for a in aucs],
                "validation_brier": round(float(np.mean(briers)), 4),
                "params": params,
                "_mean": float(np.mean(aucs)),
                "_order": order,
                "_linear": candidate.family == "linear",
            }
        )
    table.sort(key=lambda r: (-r["_mean"], r["_order"]))
    winner = candidates[winner_of(table)]
    linear_rows = [r for r in table if r["_linear"]]
    shippable = candidates[winner_of(linear_rows)] if linear_rows else None
    for row in table:
        del row["_mean"], row["_order"], row["_linear"]
    report: dict[str, Any] = {
        "cutoff": cut.isoformat(),
        "train_n": int(train.sum()),
        "test_n": int(test.sum()),
        "folds": [
            {"fit_n": int(f.sum()), "validate_n": int(v.sum()), "validate_late_rate": round(float(ds.y[v].mean()), 4)}
            for f, v in folds
        ],
        "candidates": table,
        "selected": winner.name,
        "selected_linear": shippable.name if shippable else None,
    }
    if not score_test:
        return report

    predicted: dict[Candidate, Matrix] = {}

    def on_test(candidate: Candidate) -> dict[str, Any]:
        x = ds.x[:, candidate.columns]
        est = candidate.estimator().fit(x[train], ds.y[train])
        p = predicted[candidate] = est.predict(x[test])
        auc, brier = _scores(ds.y[test], p)
        return {"candidate": candidate.name, "auc": round(auc, 4), "brier": round(brier, 4)}

    report["test"] = on_test(winner)
    if shippable is not None and shippable != winner:
        report["selected_linear_test"] = on_test(shippable)
    report["shipped_form_test"] = on_test(SHIPPED)
    # a = the first shipped form, b = the winner
    report["test_bootstrap"] = paired_bootstrap(
        ds.y[test], predicted[SHIPPED], predicted[winner], [a for a, t in zip(ds.accounts, test, strict=True) if t]
    )
    return report
