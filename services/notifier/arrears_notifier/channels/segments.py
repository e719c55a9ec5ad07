"""SMS length in segments: GSM-7 (160 septets, 153 per part) or UCS-2 (70 chars, 67 per part).

A message that holds any character outside the GSM 03.38 alphabet (and its extension table) is
sent as UCS-2, which more than halves what fits. Extension characters (``€ [ ] { } ^ ~ | \\``)
cost two septets each.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
_GSM7 = GSM7_BASIC | GSM7_EXTENSION
_EXTENSION_CHARS = tuple(GSM7_EXTENSION)


@dataclass(frozen=True)
class SmsLength:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def is_gsm7(text: str) -> bool:
    return _GSM7.issuperset(text)


def measure(text: str) -> SmsLength:
    if is_gsm7(text):
        # An extension character costs two septets (counted with str.count: no Python loop per character).
        units = len(text) + sum(text.count(ch) for ch in _EXTENSION_CHARS)
        single, part = 160, 153
        encoding = "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, part = 70, 67
        encoding = "UCS-2"
    segments = 1 if units <= single else -(-units // part)
    return SmsLength(encoding, units, segments)


def max_units(encoding: str, segments: int) -> int:
    if encoding == "GSM-7":
        return 160 if segments == 1 else 153 * segments
    return 70 if segments == 1 else 67 * segments


def fit(body: str, tail: str, segments: int = 2) -> str:
    """``body`` shortened (with an ellipsis) so that ``body + tail`` fits in ``segments`` segments.

    The tail (opt-out wording, payment link) is never cut.
    """
    full = f"{body} {tail}".strip() if tail else body
    if measure(full).segments <= segments:
        return full
    words = body.split(" ")
    while words:
        words.pop()
        candidate = (" ".join(words) + "…" + (f" {tail}" if tail else "")).strip()
        if measure(candidate).segments <= segments:
            return candidate
    return tail
