"""Reusable, validated field types for event payloads."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from babel import Locale
from pydantic import AfterValidator, Field, Strict

from arrears_shared.locales import babel_locale

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
Identifier = Annotated[str, Field(pattern=_ID, description="1-128 characters: letters, digits and ._:/@+-")]
"""An identifier from an ERP (account, invoice, payment): printable, no spaces."""

MinorUnits = Annotated[int, Strict(), Field(description="integer minor units of the currency")]
NonNegativeMinor = Annotated[int, Strict(), Field(ge=0)]
PositiveMinor = Annotated[int, Strict(), Field(gt=0)]


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _check_timezone(name: str) -> str:
    if name not in _zones():
        raise ValueError(f"unknown IANA timezone {name!r}, e.g. Europe/Berlin")
    try:
        ZoneInfo(name)
    except ZoneInfoNotFoundError:  # pragma: no cover - listed zones load
        raise ValueError(f"unknown IANA timezone {name!r}") from None
    return name


def _check_country(code: str) -> str:
    if not re.fullmatch(r"[A-Z]{2}", code) or code not in _territories():
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
    return code


@lru_cache(maxsize=1)
def _territories() -> frozenset[str]:
    return frozenset(k for k in Locale("en").territories if isinstance(k, str) and len(k) == 2 and k.isalpha())


def _check_language(tag: str) -> str:
    if babel_locale(tag) is None:
        raise ValueError(f"{tag!r} is not a BCP 47 language tag Arrears knows, e.g. en, de-CH")
    return tag


_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def _check_phone(number: str) -> str:
    if not _E164.match(number):
        raise ValueError("phone must be E.164: '+' then 7 to 15 digits")
    return number


_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def _check_email(address: str) -> str:
    if len(address) > 254 or not _EMAIL.match(address):
        raise ValueError("not a valid email address")
    return address


def _check_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a timestamp must carry a UTC offset (RFC 3339)")
    return value.astimezone(UTC)


Timezone = Annotated[str, AfterValidator(_check_timezone)]
Country = Annotated[str, AfterValidator(_check_country)]
Language = Annotated[str, AfterValidator(_check_language)]
Phone = Annotated[str, AfterValidator(_check_phone)]
Email = Annotated[str, AfterValidator(_check_email)]
UtcDatetime = Annotated[datetime, AfterValidator(_check_utc)]
