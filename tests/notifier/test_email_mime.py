"""The MIME bytes the SMTP channel generates itself parse back, with the standard library's
parser, into exactly the message that was rendered: headers (RFC 2047 for non-ASCII), both
parts, CRLF line ends, no line over 998 octets and only 7-bit bytes."""

from __future__ import annotations

from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrears_notifier.channels.base import Message
from arrears_notifier.channels.email import SmtpChannel, message_id, mime_bytes

SENDER = "Collections <collections@arrears.example>"


def parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=default_policy).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def well_formed(data: bytes) -> None:
    assert data.isascii()
    lines = data.split(b"\r\n")
    assert b"\n" not in b"".join(lines) and b"\r" not in b"".join(lines)
    assert all(len(line) <= 998 for line in lines)


def with_line_end(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def content(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body((subtype,))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def test_a_rendered_email_parses_back_with_every_header_and_both_parts() -> None:
    text = "Hallo Jürgen,\n\n. a line starting with a dot\ntrailing space \n=3D is not an escape\n" + "x" * 300
    html = "<p>Offener Betrag: 1.234,50\u00a0€</p>\n" * 10
    message = Message(
        "ACC-1:overdue_7:email",
        "erika@example.com",
        "Ihre Rechnung über 1.234,50 € – bitte begleichen Sie sie bis zum 1. Februar " * 2,
        text,
        html,
        (("List-Unsubscribe", "<https://n.example/v1/unsubscribe?token=abc.def>"), ("X-Note", "Grüße")),
    )
    data = mime_bytes(SENDER, message)
    assert data is not None
    well_formed(data)
    msg = parse(data)
    assert not msg.defects
    assert msg["From"] == SENDER
    assert msg["To"] == "erika@example.com"
    assert msg["Subject"] == message.subject
    assert msg["Message-ID"] == message_id("ACC-1:overdue_7:email")
    assert msg["X-Arrears-Notification-Id"] == "ACC-1:overdue_7:email"
    assert msg["List-Unsubscribe"] == "<https://n.example/v1/unsubscribe?token=abc.def>"
    assert msg["X-Note"] == "Grüße"
    assert msg["Date"].datetime is not None
    assert msg.get_content_type() == "multipart/alternative"
    assert content(msg, "plain") == text + "\n"
    assert content(msg, "html") == html  # already ends with a line break: none added


def test_an_ascii_text_only_email_is_7bit_and_single_part() -> None:
    message = Message("N-2", "a@example.com", "Reminder", "Please pay.\nThanks.")
    data = mime_bytes("c@arrears.example", message)
    assert data is not None
    well_formed(data)
    assert b"Content-Transfer-Encoding: 7bit" in data
    msg = parse(data)
    assert msg.get_content_type() == "text/plain"
    assert content(msg, "plain") == "Please pay.\nThanks.\n"


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        mime_bytes("c@arrears.example", Message("N-3", "a@example.com", "Hi\r\nBcc: x@evil.example", "t"))
    with pytest.raises(ValueError, match="line break"):
        mime_bytes("c@arrears.example", Message("N-3", "a@example.com\r\nBcc: x@evil.example", "Hi", "t"))


def test_a_non_ascii_address_goes_through_the_standard_library_with_the_same_message_id() -> None:
    message = Message("N-4:x", "jürgen@example.com", "Hallo", "Text")
    assert mime_bytes("c@arrears.example", message) is None
    data = SmtpChannel(host="127.0.0.1", port=1, sender="c@arrears.example").data(message)
    assert parse(data)["Message-ID"] == message_id("N-4:x")


def test_message_ids_are_valid_stable_and_distinct() -> None:
    ids = ["ACC-1:overdue_7:email", "ACC-1.overdue_7.email", 'a b"c<d>@e', ":::", "x" * 500, "a" * 119 + ":b"]
    made = [message_id(i) for i in ids]
    assert len(set(made)) == len(ids)
    assert made == [message_id(i) for i in ids]
    for mid in made:
        parsed = parse(f"Message-ID: {mid}\r\n\r\n".encode())
        assert parsed["Message-ID"] == mid
        assert not parsed["Message-ID"].defects


@settings(max_examples=200, deadline=None)
@given(
    subject=st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=200),
    text=st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
        max_size=2000,
    ),
    html=st.none() | st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=500),
)
def test_any_rendered_text_parses_back_unchanged(subject: str, text: str, html: str | None) -> None:
    message = Message("N-5", "a@example.com", subject, text, html)
    data = mime_bytes("c@arrears.example", message)
    assert data is not None
    well_formed(data)
    msg = parse(data)
    assert str(msg["Subject"]).strip() == subject.strip()
    assert content(msg, "plain") == with_line_end(text)
    if html:
        assert content(msg, "html") == with_line_end(html)
