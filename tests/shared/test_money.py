"""Money: exact conversion from decimal strings to integer minor units, by each currency's exponent."""

from __future__ import annotations

from collections.abc import Callable
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


def _babel_format_money(amount_minor: int, currency: str, locale: str) -> str:
    """What format_money gave before it kept a formatter per (currency, locale): Babel on every call."""
    from babel.numbers import format_currency

    from arrears_shared.locales import babel_locale

    english = babel_locale("en")
    try:
        return str(
            format_currency(from_minor(amount_minor, currency), currency, locale=babel_locale(locale) or english)
        )
    except (ValueError, LookupError):
        return str(format_currency(from_minor(amount_minor, currency), currency, locale=english))


def _outcome(format_: Callable[[int, str, str], str], amount_minor: int, currency: str, locale: str) -> object:
    """The text, or the type of the error raised (an amount beyond the decimal context's precision)."""
    try:
        return format_(amount_minor, currency, locale)
    except ArithmeticError as exc:
        return type(exc)


_AMOUNTS = [
    0,
    1,
    -1,
    5,
    10,
    99,
    100,
    101,
    999,
    12_345,
    -12_345,
    100_000,
    1_234_567,
    -98_765_432,
    10**15 + 7,
    10**30 + 1,
]


def test_format_money_is_babels_in_every_locale() -> None:
    """Every locale Babel knows (and a few tags it does not), currencies of every exponent and some
    CLDR rounds differently (ISK, IQD, RSD, CLF): the cached formatters give Babel's own output."""
    from babel.localedata import locale_identifiers

    currencies = ["EUR", "USD", "JPY", "BHD", "CHF", "INR", "CLF", "ISK", "IQD", "RSD", "XOF"]
    tags = [*locale_identifiers(), "de-CH", "en-IN", "xx", "not a locale", ""]
    for tag in tags:
        for currency in currencies:
            for amount in _AMOUNTS:
                assert _outcome(format_money, amount, currency, tag) == _outcome(
                    _babel_format_money, amount, currency, tag
                ), (
                    tag,
                    currency,
                    amount,
                )


@given(st.integers(min_value=-(10**20), max_value=10**20), st.sampled_from(sorted(CURRENCY_EXPONENTS)))
def test_format_money_is_babels_for_any_amount(minor: int, currency: str) -> None:
    for tag in ("en", "de", "fr", "de-CH", "hi", "ar", "fa", "ja", "es-MX", "pt-BR"):
        assert format_money(minor, currency, tag) == _babel_format_money(minor, currency, tag)


def test_format_money_refuses_an_unknown_currency() -> None:
    with pytest.raises(MoneyError):
        format_money(100, "XXQ", "de")


def test_patterns_the_formatter_does_not_cover_are_left_to_babel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pattern naming the currency in words (plural forms, by amount) is formatted by Babel itself."""
    from babel import Locale
    from babel.numbers import parse_pattern

    from arrears_shared.money import _compile_formatter

    monkeypatch.setattr(Locale, "currency_formats", property(lambda self: {"standard": parse_pattern("#,##0.00 ¤¤¤")}))
    formatter = _compile_formatter("EUR", Locale.parse("en"), Locale.parse("en"))
    assert formatter.__name__ == "babel"
    for amount in (100, 12_345, -1):
        assert formatter(amount) == _babel_format_money(amount, "EUR", "en")
    assert formatter(100) == "1.00 euro"  # CLDR: one, so singular
