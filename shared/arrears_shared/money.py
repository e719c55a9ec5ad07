"""Money as integer minor units, with each ISO 4217 currency's exponent.

Nothing in Arrears holds money as a float. Amounts from the outside world arrive as decimal
strings and are converted exactly with :func:`to_minor`; anything that cannot be converted
without rounding is refused with :class:`MoneyError`.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator

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
    """``amount_minor`` formatted for a reader of ``locale`` (``1.234,50 €`` for de), via Babel/CLDR."""
    from babel.numbers import format_currency

    from arrears_shared.locales import babel_locale

    english = babel_locale("en")
    try:
        return format_currency(from_minor(amount_minor, currency), currency, locale=babel_locale(locale) or english)
    except (ValueError, LookupError):
        return format_currency(from_minor(amount_minor, currency), currency, locale=english)
