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
