"""Money as integer minor units, with each ISO 4217 currency's exponent.

Nothing in Arrears holds money as a float. Amounts from the outside world arrive as decimal
strings and are converted exactly with :func:`to_minor`; anything that cannot be converted
without rounding is refused with :class:`MoneyError`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

if TYPE_CHECKING:
    from babel import Locale

# ISO 4217 active currency codes and their minor-unit exponents (List One, 2024 edition),
# plus the fund codes ERPs actually send. Every code not listed has exponent 2.
_EXPONENT_0 = {
    "BIF",
    "CLP",
    "DJF",
    "GNF",
    "ISK",
    "JPY",
    "KMF",
    "KRW",
    "PYG",
    "RWF",
    "UGX",
    "UYI",
    "VND",
    "VUV",
    "XAF",
    "XOF",
    "XPF",
}
_EXPONENT_3 = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"}
_EXPONENT_4 = {"CLF", "UYW"}
_EXPONENT_2 = {
    "AED",
    "AFN",
    "ALL",
    "AMD",
    "ANG",
    "AOA",
    "ARS",
    "AUD",
    "AWG",
    "AZN",
    "BAM",
    "BBD",
    "BDT",
    "BGN",
    "BMD",
    "BND",
    "BOB",
    "BOV",
    "BRL",
    "BSD",
    "BTN",
    "BWP",
    "BYN",
    "BZD",
    "CAD",
    "CDF",
    "CHE",
    "CHF",
    "CHW",
    "CNY",
    "COP",
    "COU",
    "CRC",
    "CUP",
    "CVE",
    "CZK",
    "DKK",
    "DOP",
    "DZD",
    "EGP",
    "ERN",
    "ETB",
    "EUR",
    "FJD",
    "FKP",
    "GBP",
    "GEL",
    "GHS",
    "GIP",
    "GMD",
    "GTQ",
    "GYD",
    "HKD",
    "HNL",
    "HTG",
    "HUF",
    "IDR",
    "ILS",
    "INR",
    "IRR",
    "JMD",
    "KES",
    "KGS",
    "KHR",
    "KPW",
    "KYD",
    "KZT",
    "LAK",
    "LBP",
    "LKR",
    "LRD",
    "LSL",
    "MAD",
    "MDL",
    "MGA",
    "MKD",
    "MMK",
    "MNT",
    "MOP",
    "MRU",
    "MUR",
    "MVR",
    "MWK",
    "MXN",
    "MXV",
    "MYR",
    "MZN",
    "NAD",
    "NGN",
    "NIO",
    "NOK",
    "NPR",
    "NZD",
    "PAB",
    "PEN",
    "PGK",
    "PHP",
    "PKR",
    "PLN",
    "QAR",
    "RON",
    "RSD",
    "RUB",
    "SAR",
    "SBD",
    "SCR",
    "SDG",
    "SEK",
    "SGD",
    "SHP",
    "SLE",
    "SOS",
    "SRD",
    "SSP",
    "STN",
    "SVC",
    "SYP",
    "SZL",
    "THB",
    "TJS",
    "TMT",
    "TOP",
    "TRY",
    "TTD",
    "TWD",
    "TZS",
    "UAH",
    "USD",
    "USN",
    "UYU",
    "UZS",
    "VED",
    "VES",
    "WST",
    "XCD",
    "XCG",
    "YER",
    "ZAR",
    "ZMW",
    "ZWG",
}

CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_EXPONENT_2, 2),
    **dict.fromkeys(_EXPONENT_0, 0),
    **dict.fromkeys(_EXPONENT_3, 3),
    **dict.fromkeys(_EXPONENT_4, 4),
}

_DECIMAL_RE = re.compile(r"^[+-]?(\d+)(\.(\d+))?$")


class MoneyError(ValueError):
    """An amount or currency that cannot be represented exactly."""


def is_currency(code: str) -> bool:
    return code in CURRENCY_EXPONENTS


def exponent(currency: str) -> int:
    """The number of decimal places of ``currency``'s minor unit (JPY 0, EUR 2, BHD 3)."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise MoneyError(f"unknown currency {currency!r}: not an active ISO 4217 code") from None


def to_minor(amount: str | Decimal | int, currency: str) -> int:
    """Convert a decimal amount to integer minor units exactly, or raise :class:`MoneyError`.

    ``to_minor("12.30", "EUR") == 1230``; ``to_minor("1.5", "JPY")`` raises, because yen have
    no minor unit; ``to_minor("0.001", "EUR")`` raises, because it would round.
    """
    exp = exponent(currency)
    if isinstance(amount, (bool, float)):
        raise MoneyError("amounts must be decimal strings or integers, never floats")
    if isinstance(amount, str):
        text = amount.strip()
        if not _DECIMAL_RE.match(text):
            raise MoneyError(f"{amount!r} is not a decimal amount")
        try:
            value = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the regex already rules this out
            raise MoneyError(f"{amount!r} is not a decimal amount") from None
    else:
        value = Decimal(amount)
    if not value.is_finite():
        raise MoneyError(f"{amount!r} is not a finite amount")
    scaled = value.scaleb(exp)
    if scaled != scaled.to_integral_value():
        places = "no decimals" if exp == 0 else f"at most {exp} decimals"
        raise MoneyError(f"{currency} amounts take {places}; {amount!r} would have to be rounded")
    return int(scaled)


def from_minor(amount_minor: int, currency: str) -> Decimal:
    """The exact decimal value of ``amount_minor`` in ``currency`` (for display and export only)."""
    return Decimal(amount_minor).scaleb(-exponent(currency))


def _check_currency(code: str) -> str:
    if not is_currency(code):
        raise ValueError(f"unknown currency {code!r}: expected an active ISO 4217 code such as EUR")
    return code


Currency = Annotated[str, AfterValidator(_check_currency)]
"""A pydantic type for an active ISO 4217 currency code."""


def format_money(amount_minor: int, currency: str, locale: str) -> str:
    """``amount_minor`` formatted for a reader of ``locale`` (``1.234,50 €`` for de), via Babel/CLDR.

    Exactly what ``babel.numbers.format_currency`` gives (in the locale, else in English when Babel
    cannot format the currency there), with the locale's pattern, symbols and the currency's digits
    looked up once per (currency, locale) rather than on every call."""
    return _money_formatter(currency, locale)(amount_minor)


@functools.lru_cache(maxsize=4096)
def _money_formatter(currency: str, locale: str) -> Callable[[int], str]:
    from arrears_shared.locales import babel_locale

    english = babel_locale("en")
    assert english is not None  # Babel always knows English
    chosen = babel_locale(locale) or english
    try:
        return _compile_formatter(currency, chosen, english)
    except (ValueError, LookupError):
        return _compile_formatter(currency, english, english)


def _compile_formatter(currency: str, locale: Locale, english: Locale) -> Callable[[int], str]:
    """A formatter of minor units doing what ``NumberPattern.apply`` does for a currency (the locale's
    standard currency pattern, the currency's CLDR digits, grouping), with every lookup done here;
    raises as ``format_currency`` would when the locale cannot format the currency. Patterns it does
    not cover (scientific, significant digits, scaled, the currency's plural name, quoted text) are
    left to Babel itself."""
    from babel.numbers import (
        format_currency,
        get_currency_precision,
        get_currency_symbol,
        get_decimal_symbol,
        get_group_symbol,
    )

    exp = exponent(currency)
    pattern = locale.currency_formats["standard"]
    digits = get_currency_precision(currency)
    group = get_group_symbol(locale, numbering_system="latn")
    point = get_decimal_symbol(locale, numbering_system="latn")
    symbol = get_currency_symbol(currency, locale)

    def place(affix: str) -> str:
        return affix.replace("¤¤", currency.upper()).replace("¤", symbol)

    affixes = (*pattern.prefix, *pattern.suffix)
    if (
        pattern.scale
        or pattern.exp_prec
        or "@" in pattern.pattern
        or pattern.number_pattern == ""
        or any("¤¤¤" in a for a in affixes)
        or any("'" in text or "¤" in text for text in (group, point, *(place(a) for a in affixes)))
    ):

        def babel(amount_minor: int) -> str:
            value = from_minor(amount_minor, currency)
            try:
                return str(format_currency(value, currency, locale=locale))
            except (ValueError, LookupError):
                return str(format_currency(value, currency, locale=english))

        return babel

    prefix = (place(pattern.prefix[0]), place(pattern.prefix[1]))
    suffix = (place(pattern.suffix[0]), place(pattern.suffix[1]))
    quantum = Decimal(10) ** (-digits)
    scale = pattern.scale
    min_int = pattern.int_prec[0]
    first, later = pattern.grouping

    def fast(amount_minor: int) -> str:
        value = Decimal(amount_minor).scaleb(-exp).scaleb(scale)
        negative = int(value.is_signed())
        whole, _, fraction = f"{abs(value).normalize().quantize(quantum):f}".partition(".")
        if len(whole) < min_int:
            whole = "0" * (min_int - len(whole)) + whole
        grouped = ""
        size = first
        while len(whole) > size:
            grouped = group + whole[-size:] + grouped
            whole = whole[:-size]
            size = later
        number = whole + grouped
        if digits:
            fraction = fraction or "0"
            if len(fraction) < digits:
                fraction += "0" * (digits - len(fraction))
            while len(fraction) > digits and fraction[-1] == "0":
                fraction = fraction[:-1]
            number += point + fraction
        return prefix[negative] + number + suffix[negative]

    return fast
