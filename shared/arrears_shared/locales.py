"""Babel locales, parsed once: every event with a customer names one, and formatting an amount or a
date for a reader parses it again unless it is remembered."""

from __future__ import annotations

import functools

from babel import Locale, UnknownLocaleError


@functools.lru_cache(maxsize=1024)
def babel_locale(tag: str) -> Locale | None:
    """The Babel locale for a BCP 47 tag (``de-CH``) or a Babel name (``de_CH``); None when Babel
    does not know it."""
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return None
