"""The escalation policy: the default ladder, variants, validation, simulation, fees."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from arrears_case_manager.cases.fees import fees_for
from arrears_case_manager.policy.models import PolicyError, load_policy, parse_policy
from arrears_case_manager.policy.simulate import simulate
from arrears_shared.events.v1 import Terms
from tests.case_manager.helpers import account_state
from tests.conftest import run_cli


def test_default_is_the_design_ladder() -> None:
    policy = load_policy(None)
    assert [(lv.name, lv.day) for lv in policy.levels] == [
        ("pre_due", -3),
        ("due", 0),
        ("overdue_1", 1),
        ("overdue_7", 7),
        ("overdue_14", 14),
        ("overdue_30", 30),
        ("external", 60),
    ]
    assert policy.by_name("overdue_7").channels == ["email", "sms", "call_task"]
    assert policy.by_name("overdue_14").actions == ["late_fee"]
    assert policy.by_name("overdue_30").actions == ["notice_of_intent", "credit_hold"]
    assert policy.by_name("external").actions == ["external_handoff"]


def test_high_risk_moves_faster_and_low_risk_slower() -> None:
    policy = load_policy(None)
    default, fast, slow = policy.ladder("medium", None), policy.ladder("critical", None), policy.ladder("low", None)
    for name in ("overdue_7", "overdue_14", "overdue_30", "external"):
        assert fast.by_name(name).day < default.by_name(name).day < slow.by_name(name).day
    assert policy.ladder("high", None) is fast
    # Day 10 is overdue_7 on every ladder (the end-to-end test relies on it).
    assert {lad.level_for(10).name for lad in (default, fast, slow)} == {"overdue_7"}  # type: ignore[union-attr]


def test_segment_variant_is_chosen_by_segment() -> None:
    text = """
version: 2
name: seg
levels:
  - {name: a, day: 0, template: t}
  - {name: b, day: 10, template: t}
variants:
  - name: key_accounts
    segments: [enterprise]
    levels:
      - {name: a, day: 5, template: t}
      - {name: b, day: 30, template: t}
"""
    policy = parse_policy(text)
    assert policy.ladder("high", "enterprise").by_name("b").day == 30
    assert policy.ladder("high", "smb").by_name("b").day == 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\nname: x\nlevels:\n  - name: a\n    day: 3\n    template: t\n    channels: [fax]\n",
            "line 7: levels.0.channels.0",
        ),
        ("version: 1\nname: x\nlevels:\n  - name: a\n    day: 3\n    tempalte: t\n", "levels.0.template"),
        ("version: 0\nname: x\nlevels:\n  - {name: a, day: 1, template: t}\n", "line 1: version"),
        ("version: 1\nname: x\nlevels: [\n", "not valid YAML"),
        (
            "version: 1\nname: x\nlevels:\n  - {name: a, day: 1, template: t}\n"
            "variants:\n  - name: v\n    levels:\n      - {name: z, day: 1, template: t}\n",
            "same level names",
        ),
    ],
)
def test_bad_policy_is_refused_naming_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "p.yaml")
    assert expected in str(err.value)


def test_policy_check_cli(tmp_path: Path) -> None:
    good = run_cli(
        "arrears_case_manager.cli", "policy", "check", "services/case_manager/arrears_case_manager/policy/default.yaml"
    )
    assert good.returncode == 0, good.stderr
    assert "ok" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nlevels:\n  - name: a\n    day: nope\n    template: t\n")
    out = run_cli("arrears_case_manager.cli", "policy", "check", str(bad))
    assert out.returncode == 1
    assert "line 5: levels.0.day" in out.stderr


def test_simulate_explains_each_step(tmp_path: Path) -> None:
    today = date(2026, 3, 20)
    state = account_state("SIM-1", today=today, invoices=[("I1", date(2026, 3, 10), 10_000)])
    result = simulate(load_policy(None), state, today)
    steps = {s["level"]: s for s in result["steps"]}
    assert not steps["due"]["fires"]
    assert "never replays" in steps["due"]["why"]
    assert steps["overdue_7"]["fires"]
    assert steps["overdue_7"]["on"] == "2026-03-20"
    assert steps["overdue_14"]["on"] == "2026-03-24"
    assert steps["external"]["on"] == "2026-05-09"
    # From the command line, with a state file.
    path = tmp_path / "state.json"
    path.write_text(state.model_dump_json())
    out = run_cli("arrears_case_manager.cli", "policy", "simulate", "--state", str(path), "--today", "2026-03-20")
    assert out.returncode == 0, out.stderr
    assert '"level": "overdue_30"' in out.stdout


def test_fees_follow_the_terms_with_half_up_rounding() -> None:
    assert fees_for(10_000, 14, None) == []
    assert fees_for(10_000, 14, Terms(code="NET30")) == []
    [fee] = fees_for(12_345, 14, Terms(code="X", late_fee_percent=Decimal("1.5")))
    assert (fee.kind, fee.amount_minor) == ("late_fee", 185)  # 185.175 -> 185
    [fee] = fees_for(10_000, 1, Terms(code="X", late_fee_percent=Decimal("0.005")))
    assert fee.amount_minor == 1  # 0.5 rounds half up
    # 8% a year on 100,000.00 for 30 days, accrued daily (actual/365): 657.534... -> 657.53
    [fee] = fees_for(10_000_000, 30, Terms(code="X", annual_interest_percent=Decimal("8")))
    assert (fee.kind, fee.amount_minor) == ("interest", 65_753)
    # JPY has no minor unit: the same arithmetic on whole yen.
    [fee] = fees_for(100_000, 30, Terms(code="X", annual_interest_percent=Decimal("8")))
    assert fee.amount_minor == 658
    assert fees_for(10_000, 0, Terms(code="X", late_fee_percent=Decimal("5"))) == []
