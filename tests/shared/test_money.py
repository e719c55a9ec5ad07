"""Money: exact conversion from decimal strings to integer minor units, by each currency's exponent."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arrears_shared.money import CURRENCY_EXPONENTS, MoneyError, exponent, format_money, from_minor, to_minor


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.30", "EUR", 1230),
        ("12.3", "EUR", 1230),
        ("1656.25", "EUR", 165625),
        ("-1656.25", "EUR", -165625),
        ("0", "EUR", 0),
        ("1500", "JPY", 1500),
        ("1.234", "BHD", 1234),
        ("1.2345", "CLF", 12345),
        (" 7.00 ", "USD", 700),
        (42, "EUR", 4200),
    ],
)
def test_to_minor_is_exact(amount: str | int, currency: str, minor: int) -> None:
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("1.5", "JPY", "no decimals"),
        ("0.001", "EUR", "at most 2 decimals"),
        ("1.2345", "BHD", "at most 3 decimals"),
        ("12,30", "EUR", "not a decimal amount"),
        ("1e3", "EUR", "not a decimal amount"),
        ("NaN", "EUR", "not a decimal amount"),
        ("", "EUR", "not a decimal amount"),
        ("10.00", "XXX", "unknown currency"),
        ("10.00", "eur", "unknown currency"),
    ],
)
def test_to_minor_refuses_what_it_cannot_convert(amount: str, currency: str, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        to_minor(amount, currency)


def test_floats_are_refused() -> None:
    with pytest.raises(MoneyError, match="never floats"):
        to_minor(0.1, "EUR")  # type: ignore[arg-type]


def test_exponents() -> None:
    assert exponent("EUR") == 2
    assert exponent("JPY") == 0
    assert exponent("KWD") == 3
    assert len(CURRENCY_EXPONENTS) > 150


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(sorted(CURRENCY_EXPONENTS)))
def test_round_trip(minor: int, currency: str) -> None:
    assert to_minor(str(from_minor(minor, currency)), currency) == minor


def test_from_minor_is_decimal() -> None:
    assert from_minor(123450, "EUR") == Decimal("1234.50")


@pytest.mark.parametrize(
    ("locale", "currency", "expected"),
    [
        ("en", "EUR", "€1,234.50"),
        ("de", "EUR", "1.234,50\xa0€"),
        ("fr", "EUR", "1\u202f234,50\xa0€"),
        ("en", "JPY", "¥1,235"),
        ("de-CH", "CHF", "CHF\xa01’234.50"),
    ],
)
def test_format_money_follows_the_locale(locale: str, currency: str, expected: str) -> None:
    minor = 1235 if currency == "JPY" else 123450
    assert format_money(minor, currency, locale) == expected
