"""SMS length: GSM-7 versus UCS-2, extension characters, and fitting into two segments."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from arrears_notifier.channels.segments import fit, measure


def test_gsm7_and_ucs2_limits() -> None:
    assert measure("a" * 160).segments == 1
    assert measure("a" * 161).segments == 2
    assert measure("a" * 306).segments == 2
    assert measure("a" * 307).segments == 3
    assert measure("€" * 80).units == 160  # an extension character costs two septets
    assert measure("€" * 80).segments == 1
    assert measure("ł" + "a" * 69).encoding == "UCS-2"
    assert measure("ł" + "a" * 69).segments == 1
    assert measure("ł" + "a" * 70).segments == 2
    assert measure("😀" * 35).units == 70  # outside the BMP: two UTF-16 units each


@given(
    body=st.text(min_size=0, max_size=600), tail=st.sampled_from(["Reply STOP to opt out.", "STOP: ne plus recevoir"])
)
def test_fit_keeps_the_tail_and_two_segments(body: str, tail: str) -> None:
    out = fit(body, tail, 2)
    assert out.endswith(tail)
    assert measure(out).segments <= 2


def _reference_measure(text: str) -> tuple[str, int]:
    """The per-character definition that ``measure`` computes with set and count operations."""
    from arrears_notifier.channels.segments import GSM7_BASIC, GSM7_EXTENSION

    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        return "GSM-7", sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
    return "UCS-2", len(text.encode("utf-16-le")) // 2


@given(text=st.text(alphabet=st.sampled_from("aZ0 @£€^{}[~]|\\\fßłé😀\n"), max_size=400) | st.text(max_size=400))
def test_measure_matches_the_per_character_definition(text: str) -> None:
    length = measure(text)
    assert (length.encoding, length.units) == _reference_measure(text)
