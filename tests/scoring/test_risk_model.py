"""The risk model: features known at issue only, time-ordered backtest on the IBM sample, a
stored model that is plain data, and the commands that fit and backtest it."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_scoring.risk.features import (
    TRAINED_FEATURES,
    Record,
    SettledInvoice,
    history_features,
    invoice_features,
    known_before,
)
from arrears_scoring.risk.model import RiskModel, tier_of
from arrears_scoring.risk.recommend import recommend
from arrears_scoring.risk.repository import ModelRepository
from arrears_scoring.risk.train import BadCsv, backtest, build_dataset, read_ibm_csv, split, train_all
from arrears_shared.events.v1 import Balance, Buckets, Customer, Risk
from tests.conftest import run_cli

IBM = "ar/WA_Fn-UseC_-Accounts-Receivable.csv"


def test_features_see_only_invoices_settled_before_the_issue_date() -> None:
    d = date(2026, 3, 1)
    history = [
        SettledInvoice(d - timedelta(days=90), d - timedelta(days=60), d - timedelta(days=50), 1000),  # 10 late
        SettledInvoice(d - timedelta(days=40), d - timedelta(days=10), d, 1000),  # settled ON the day: unknown
        SettledInvoice(d - timedelta(days=30), d, d + timedelta(days=5), 1000),  # settled after: unknown
    ]
    known = known_before(history, d)
    assert len(known) == 1
    f = invoice_features(known, d, d + timedelta(days=30), 2000, [d - timedelta(days=10), d + timedelta(days=5)])
    assert f["past_late_ratio"] == 1.0
    assert f["past_mean_days_late"] == 10.0
    assert f["amount_ratio"] == 2.0
    assert f["open_at_issue"] == 2.0
    assert f["overdue_at_issue"] == 1.0
    assert f["max_days_overdue_at_issue"] == 10.0


def test_signed_lateness_tells_early_payers_from_on_time_ones() -> None:
    d = date(2026, 3, 1)

    def paid(days_from_due: int, k: int, amount: int = 1000) -> SettledInvoice:
        due = d - timedelta(days=100 - 10 * k)
        return SettledInvoice(due - timedelta(days=30), due, due + timedelta(days=days_from_due), amount)

    early = [paid(-10, k) for k in range(3)]
    on_time = [paid(0, k) for k in range(3)]
    f_early = invoice_features(known_before(early, d), d, d + timedelta(days=30), 1000)
    f_on_time = invoice_features(known_before(on_time, d), d, d + timedelta(days=30), 1000)
    # neither was ever late: the unsigned features cannot tell them apart, the signed ones can
    for name in ("past_late_ratio", "past_mean_days_late", "recent_late_ratio", "last_days_late", "ewm_late_ratio"):
        assert f_early[name] == f_on_time[name] == 0.0
    assert f_early["past_mean_signed_late"] == f_early["ewm_signed_late"] == -10.0
    assert f_on_time["past_mean_signed_late"] == f_on_time["ewm_signed_late"] == 0.0

    mixed = [paid(-10, 0), paid(0, 1), paid(6, 2)]  # settled in this order
    f = invoice_features(known_before(mixed, d), d, d + timedelta(days=30), 1000)
    assert f["past_mean_signed_late"] == pytest.approx(-4 / 3)
    assert f["past_median_signed_late"] == statistics.median([-10, 0, 6]) == 0.0
    assert f["last_signed_late"] == 6.0
    assert f["past_sd_signed_late"] == pytest.approx(statistics.pstdev([-10, 0, 6]))
    assert f["ewm_signed_late"] == pytest.approx(-3.1)  # -10, then -10 + 0.3 * 10, then -7 + 0.3 * 13
    assert f["ewm_late_ratio"] == pytest.approx(0.3)  # only the newest was late
    assert f["signed_late_trend"] == pytest.approx(0.0)  # the last 5 are all of them

    # an account getting later: its last 5 settlements are later than its whole history's mean
    worsening = [paid(-10, k) for k in range(5)] + [paid(5, 5 + k) for k in range(5)]
    f = invoice_features(known_before(worsening, d), d, d + timedelta(days=30), 1000)
    assert f["past_median_signed_late"] == pytest.approx(-2.5)  # even count: the middle two's mean
    assert f["signed_late_trend"] == pytest.approx(5 - (-2.5))
    assert f["ewm_late_ratio"] == pytest.approx(1 - 0.7**5)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-40, 90), st.integers(1, 10**7), st.booleans()),
        max_size=12,
    )
)
def test_history_features_are_their_plain_definitions(paid: list[tuple[int, int, bool]]) -> None:
    """The hot path's one-pass history features equal the definitions written out plainly."""
    d = date(2026, 3, 1)
    history = [
        SettledInvoice(d - timedelta(days=400 - 20 * k), due, due + timedelta(days=signed), amount, disputed)
        for k, (signed, amount, disputed) in enumerate(paid)
        for due in [d - timedelta(days=370 - 20 * k)]
    ]
    f = history_features(history)
    n = len(history)
    if not n:
        assert f["no_history"] == 1.0
        assert all(v == 0.0 for k, v in f.items() if k != "no_history")
        return
    signed = [h.signed_days_late for h in history]
    late = [h.days_late for h in history]
    ewm = [float(signed[0]), 1.0 if late[0] > 0 else 0.0]
    for s_, l_ in zip(signed[1:], late[1:], strict=True):
        ewm = [ewm[0] + 0.3 * (s_ - ewm[0]), ewm[1] + 0.3 * ((1.0 if l_ > 0 else 0.0) - ewm[1])]
    expected = {
        "past_late_ratio": sum(1 for x in late if x > 0) / n,
        "past_mean_days_late": statistics.mean(late),
        "recent_late_ratio": sum(1 for x in late[-5:] if x > 0) / len(late[-5:]),
        "last_days_late": late[-1],
        "past_invoices_log": math.log1p(n),
        "no_history": 0.0,
        "past_dispute_ratio": sum(1 for h in history if h.disputed) / n,
        "past_mean_signed_late": statistics.mean(signed),
        "past_median_signed_late": statistics.median(signed),
        "last_signed_late": signed[-1],
        "ewm_signed_late": ewm[0],
        "signed_late_trend": statistics.mean(signed[-5:]) - statistics.mean(signed),
        "past_sd_signed_late": statistics.pstdev(signed),
        "ewm_late_ratio": ewm[1],
        "_mean_amount": statistics.mean(h.amount_minor for h in history),
        "_last_settled": history[-1].settled_date.toordinal(),
    }
    assert set(f) == set(expected)
    for name, value in expected.items():
        assert f[name] == pytest.approx(value, abs=1e-9), name


def test_amounts_open_and_overdue_at_issue_against_the_usual_amount() -> None:
    d = date(2026, 3, 1)
    history = [SettledInvoice(d - timedelta(days=90), d - timedelta(days=60), d - timedelta(days=60), 2000)]
    open_due = [d - timedelta(days=5), d + timedelta(days=10), d]  # one overdue; due today is not
    f = invoice_features(history, d, d + timedelta(days=30), 500, open_due, open_amounts=[1000, 3000, 500])
    assert f["open_amount_ratio"] == pytest.approx(4500 / 2000)
    assert f["overdue_amount_ratio"] == pytest.approx(1000 / 2000)
    # no history: against this invoice's own amount; every history feature at its neutral 0
    f = invoice_features([], d, d + timedelta(days=30), 500, open_due, open_amounts=[1000, 3000, 500])
    assert f["open_amount_ratio"] == pytest.approx(4500 / 500)
    assert f["overdue_amount_ratio"] == pytest.approx(1000 / 500)
    assert f["no_history"] == 1.0
    for name in ("past_mean_signed_late", "past_median_signed_late", "last_signed_late", "ewm_signed_late"):
        assert f[name] == 0.0
    # without the amounts (a caller that has the due dates only) the amount features are 0
    f = invoice_features(history, d, d + timedelta(days=30), 500, open_due)
    assert f["open_amount_ratio"] == f["overdue_amount_ratio"] == 0.0
    assert set(TRAINED_FEATURES) <= set(f)


def synthetic(n_accounts: int = 40) -> list[Record]:
    """Accounts that are either habitually late or punctual, one invoice a month."""
    out: list[Record] = []
    for a in range(n_accounts):
        late = a % 3 == 0
        for m in range(12):
            issue = date(2025, 1, 1) + timedelta(days=30 * m + a % 7)
            due = issue + timedelta(days=30)
            settled = due + timedelta(days=(15 + m % 5) if late else -(m % 5))
            out.append(Record(f"a{a}", f"a{a}-{m}", issue, due, settled, 10_000 + 100 * m, disputed=late and m == 3))
    return out


def test_training_learns_lateness_and_writes_plain_data() -> None:
    model = train_all(synthetic(), "synthetic-1")
    raw = json.loads(json.dumps(model.as_dict()))  # JSON round trip: nothing but data
    again = RiskModel.from_dict(raw)
    assert again == model
    assert model.metrics["auc"] > 0.9
    assert {f.name for f in model.features if f.source == "prior"} >= {"days_past_due", "credit_utilization"}
    late = dict.fromkeys(["past_late_ratio", "recent_late_ratio"], 1.0) | {"past_mean_days_late": 17.0}
    assert model.probability(late) > model.probability({"past_late_ratio": 0.0, "past_mean_days_late": 0.0})


def test_time_ordered_split_never_trains_on_the_test_period() -> None:
    ds = build_dataset(synthetic())
    cutoff = date(2025, 8, 1)
    train, test = split(ds, cutoff)
    for i in range(len(ds.y)):
        if train[i]:
            assert ds.issued[i] < cutoff
            assert ds.settled[i] < cutoff
        if test[i]:
            assert ds.issued[i] >= cutoff
    assert not (train & test).any()


def test_ibm_backtest_time_ordered(shared_data: Path) -> None:
    records = read_ibm_csv(shared_data / IBM)
    assert len(records) == 2466
    _, report = backtest(records, None, "ibm")
    # figures recorded in docs/scoring.md "Model selection": the ledger features are in the model
    assert report["auc"] == 0.9357 and report["brier"] == 0.092
    assert report["auc"] > 0.85
    assert report["issue_time_only"]["auc"] > 0.8
    assert 0 < report["brier"] < 0.25
    assert sum(c["count"] for c in report["calibration"]) == report["n"]


def test_bad_csv_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("customerID,invoiceNumber\nx,1\n")
    with pytest.raises(BadCsv, match="missing columns"):
        read_ibm_csv(bad)
    bad.write_text(
        "customerID,invoiceNumber,InvoiceDate,DueDate,InvoiceAmount,Disputed,SettledDate\n"
        "c,1,1/2/2013,2/1/2013,12.345,No,1/15/2013\n"
    )
    with pytest.raises(BadCsv, match="decimals"):
        read_ibm_csv(bad)


def _env() -> dict[str, str]:
    return {**os.environ, "ARREARS_DATABASE_URL": "postgresql://unused@127.0.0.1:1/none"}


def test_backtest_and_train_commands_on_a_csv(shared_data: Path, tmp_path: Path) -> None:
    plot = tmp_path / "calibration.png"
    done = run_cli("arrears_scoring.main", "backtest", "--csv", str(shared_data / IBM), "--plot", str(plot), env=_env())
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"auc", "brier", "calibration", "cutoff", "issue_time_only"} <= set(report)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "model.json"
    done = run_cli(
        "arrears_scoring.main", "train", "--csv", str(shared_data / IBM), "--no-activate", "--out", str(out), env=_env()
    )
    assert done.returncode == 0, done.stderr
    model = RiskModel.from_dict(json.loads(out.read_text()))
    assert model.version.startswith("csv-")
    missing = run_cli("arrears_scoring.main", "backtest", "--csv", str(tmp_path / "nope.csv"), env=_env())
    assert missing.returncode != 0
    assert sys.executable  # the commands ran with this interpreter


async def test_stored_model_round_trips_and_newest_is_active(session: AsyncSession) -> None:
    from datetime import UTC, datetime

    repo = ModelRepository()
    first = train_all(synthetic(), "m-1").as_dict()
    second = {**first, "version": "m-2"}
    await repo.save(session, first, datetime(2026, 1, 1, tzinfo=UTC))
    await repo.save(session, second, datetime(2026, 1, 2, tzinfo=UTC))
    active = await repo.active(session)
    assert active is not None
    assert active["version"] == "m-2"
    assert RiskModel.from_dict(active).features == RiskModel.from_dict(first).features


def _balances(open_minor: int) -> list[Balance]:
    return [Balance(currency="EUR", open_minor=open_minor, overdue_minor=open_minor, buckets=Buckets())]


def test_credit_recommendation_from_risk_and_exposure() -> None:
    cust = Customer(
        account_id="a", name="n", country="DE", timezone="Europe/Berlin", credit_limit_minor=10_000, currency="EUR"
    )

    def risk(p: float) -> Risk:
        return Risk(probability=p, tier=tier_of(p, (0.25, 0.5, 0.75)), model_version="t")

    assert recommend(risk(0.1), cust, _balances(9_000)).action == "keep_terms"
    lower = recommend(risk(0.3), cust, _balances(9_000))
    assert lower.action == "lower_limit"
    assert lower.suggested_limit_minor == 7_000
    assert recommend(risk(0.6), cust, _balances(2_000)).action == "lower_limit"
    assert recommend(risk(0.6), cust, _balances(12_000)).action == "require_prepayment"
    assert recommend(risk(0.9), cust, _balances(0)).action == "require_prepayment"
    assert recommend(risk(0.1), None, []).action == "keep_terms"
