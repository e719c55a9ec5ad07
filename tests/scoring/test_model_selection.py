"""Model selection (issue 4): a fixed candidate space chosen by time-ordered validation inside the
training period; the test period is never seen before the winner is scored on it."""

from __future__ import annotations

import json
import os
import random
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from arrears_scoring.risk.features import BASE_FEATURES, LEDGER_FEATURES, TRAINED_FEATURES, Record
from arrears_scoring.risk.selection import (
    ALL_COLUMNS,
    CANDIDATES,
    FEATURE_SETS,
    SHIPPED,
    Candidate,
    inner_folds,
    paired_bootstrap,
    rank_auc,
    select,
    winner_of,
)
from arrears_scoring.risk.train import build_dataset, default_cutoff, split
from tests.conftest import run_cli

IBM = "ar/WA_Fn-UseC_-Accounts-Receivable.csv"
SMALL = (SHIPPED, Candidate("bins", "l2", 0.3), Candidate("hgb", leaves=4, learning_rate=0.1, iterations=20))


def noisy(n_accounts: int = 60) -> list[Record]:
    """Accounts with a lateness habit of their own, one invoice a fortnight, with noise."""
    rng = random.Random(7)
    out: list[Record] = []
    for a in range(n_accounts):
        habit = rng.random()
        for m in range(24):
            issue = date(2025, 1, 1) + timedelta(days=14 * m + a % 5)
            due = issue + timedelta(days=rng.choice((15, 30, 45)))
            late = rng.random() < habit
            settled = due + timedelta(days=rng.randint(1, 30)) if late else due - timedelta(days=rng.randint(0, 10))
            disputed = late and rng.random() < 0.3
            out.append(Record(f"a{a}", f"a{a}-{m}", issue, due, settled, 10_000 + 137 * m, disputed))
    return out


def test_inner_folds_stay_inside_the_training_period_in_time_order() -> None:
    ds = build_dataset(noisy())
    cutoff = default_cutoff(ds)
    train, test = split(ds, cutoff)
    folds = inner_folds(ds, train)
    assert len(folds) == 3
    previous_cut = date.min
    for fit_mask, val_mask in folds:
        assert not (fit_mask & ~train).any() and not (val_mask & ~train).any()
        assert not (fit_mask & test).any() and not (val_mask & test).any()
        assert not (fit_mask & val_mask).any()
        first_validated = min(d for d, v in zip(ds.issued, val_mask, strict=True) if v)
        assert first_validated > previous_cut
        for i in range(len(ds.y)):
            if fit_mask[i]:  # fitted only on what was issued and settled before the validation window
                assert ds.issued[i] < first_validated
                assert ds.settled[i] < first_validated
        previous_cut = first_validated
        assert fit_mask.sum() > 0 and val_mask.sum() > 0


def test_selection_never_looks_at_the_test_period() -> None:
    records = noisy()
    cutoff = default_cutoff(build_dataset(records))
    report = select(records, cutoff, SMALL)
    # Swap every test-period invoice's outcome (paid late <-> on time; still settled on/after the
    # cutoff, so the training period cannot see it): the selection must not move, the test figure must.
    swapped = [
        r
        if r.issue_date < cutoff
        else replace(r, settled_date=r.due_date - timedelta(days=1))
        if r.late
        else replace(r, settled_date=r.due_date + timedelta(days=20))
        for r in records
    ]
    assert all(r.settled_date >= cutoff for r in swapped if r.issue_date >= cutoff)
    again = select(swapped, cutoff, SMALL)
    assert again["candidates"] == report["candidates"]
    assert again["selected"] == report["selected"]
    assert again["test"]["auc"] != report["test"]["auc"]
    assert report["selected"] in {c.name for c in SMALL}
    assert [r["validation_auc"] for r in report["candidates"]] == sorted(
        (r["validation_auc"] for r in report["candidates"]), reverse=True
    )


def test_winner_prefers_fewer_parameters_only_within_the_tie_margin() -> None:
    rows = [
        {"_mean": 0.9101, "params": 42, "_order": 0},
        {"_mean": 0.9095, "params": 14, "_order": 1},
        {"_mean": 0.9080, "params": 5, "_order": 2},
    ]
    assert winner_of(rows) == 1  # within 0.001 and fewer parameters
    assert winner_of([rows[0], rows[2]]) == 0  # 0.0021 worse: not a tie


def test_candidate_space_is_fixed_and_named_uniquely() -> None:
    names = [c.name for c in CANDIDATES]
    assert len(names) == len(set(names)) == 88
    assert SHIPPED in CANDIDATES
    assert {c.family for c in CANDIDATES} == {"linear", "log", "pairs", "bins", "hgb"}
    # the same 44 forms on each feature set
    for fs in FEATURE_SETS:
        assert sorted(replace(c, features="base").name for c in CANDIDATES if c.features == fs) == sorted(
            c.name for c in CANDIDATES if c.features == "base"
        )
    assert FEATURE_SETS["ledger"] == (*BASE_FEATURES, *LEDGER_FEATURES, "disputed")
    # what train.fit ships is a candidate of the stored model's form on the shipped features
    assert (*TRAINED_FEATURES, "disputed") == FEATURE_SETS["ledger"]


def test_validation_only_leaves_the_test_period_unscored() -> None:
    records = noisy()
    report = select(records, None, SMALL, score_test=False)
    assert not {"test", "selected_linear_test", "shipped_form_test", "test_bootstrap"} & set(report)
    full = select(records, None, SMALL)
    assert full["candidates"] == report["candidates"]
    assert full["selected"] == report["selected"]
    assert report["selected_linear"] == SHIPPED.name  # the only linear candidate of SMALL


def test_the_ledger_features_are_columns_of_their_own_candidates() -> None:
    ds = build_dataset(noisy(), ALL_COLUMNS)
    base = Candidate("linear", "l2", 1.0)
    ledger = Candidate("linear", "l2", 1.0, features="ledger")
    assert ledger.name == "ledger linear l2 C=1"
    assert [ALL_COLUMNS[i] for i in base.columns] == [*BASE_FEATURES, "disputed"]
    assert [ALL_COLUMNS[i] for i in ledger.columns] == list(ALL_COLUMNS)
    # the base columns of the wide dataset are the dataset the first model was fitted on
    narrow = build_dataset(noisy(), (*BASE_FEATURES, "disputed"))
    assert np.array_equal(ds.x[:, base.columns], narrow.x)


def test_select_model_command_on_the_ibm_sample(shared_data: Path) -> None:
    env = {**os.environ, "ARREARS_DATABASE_URL": "postgresql://unused@127.0.0.1:1/none"}
    done = run_cli("arrears_scoring.main", "select-model", "--csv", str(shared_data / IBM), env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # the figures in docs/scoring.md "Model selection"
    assert report["cutoff"] == "2013-05-06"
    assert len(report["candidates"]) == 88
    assert [f["validate_n"] for f in report["folds"]] == [245, 241, 327]
    assert len(report["candidates"]) == len(CANDIDATES)
    best = report["candidates"][0]
    assert best["candidate"] == "ledger linear l2 C=1"
    assert best["validation_auc"] == 0.9189
    assert best["validation_auc_folds"] == [0.8977, 0.9241, 0.9348]
    first_form = next(r for r in report["candidates"] if r["candidate"] == "linear l2 C=1")
    assert first_form["validation_auc"] == 0.9052
    assert report["selected"] == report["selected_linear"] == "ledger linear l2 C=1"
    assert "selected_linear_test" not in report  # the winner is of the stored model's form already
    assert report["test"] == {"candidate": "ledger linear l2 C=1", "auc": 0.9357, "brier": 0.092}
    assert report["shipped_form_test"] == {"candidate": "linear l2 C=1", "auc": 0.9267, "brier": 0.0974}
    boot = report["test_bootstrap"]
    assert boot["invoice"]["a_auc_95"] == [0.9053, 0.9444]
    assert boot["customer"]["a_auc_95"] == [0.8985, 0.9472]
    assert boot["invoice"]["b_minus_a_95"] == [0.0015, 0.0168]
    assert boot["customer"]["b_minus_a_95"] == [0.0006, 0.0178]


def test_rank_auc_equals_scikit_learns_with_ties_and_the_bootstrap_is_paired() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300) * 0.5 + y * 0.3, 1).astype(np.float64)  # coarse: many ties
    assert rank_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    accounts = [f"c{i % 17}" for i in range(300)]
    same = paired_bootstrap(y, p, p, accounts, resamples=50)
    for mode in ("invoice", "customer"):
        assert same[mode]["b_minus_a_95"] == [0.0, 0.0]  # a model against itself: no difference
        low, high = same[mode]["a_auc_95"]
        assert low <= round(float(roc_auc_score(y, p)), 4) <= high
