"""Hardened XML parsing: no DTDs, no entities, no external references, no network.

defusedxml refuses a document type declaration outright (``forbid_dtd``), so entity expansion
("billion laughs", quadratic blow-up) and external entities (file or network reads) cannot happen;
expat never fetches anything over the network.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException  # type: ignore[import-untyped]
from defusedxml.ElementTree import fromstring  # type: ignore[import-untyped]


class XmlRejected(ValueError):
    """The body is not acceptable XML; ``kind`` is ``hostile-xml`` or ``malformed-xml``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def parse_xml(body: bytes) -> Element:
    try:
        root: Element = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise XmlRejected(
            "hostile-xml",
            f"document type declarations, entities and external references are refused ({type(exc).__name__})",
        ) from None
    except ParseError as exc:
        line, column = exc.position
        raise XmlRejected("malformed-xml", f"not well-formed XML at line {line}, column {column}") from None
    return root


def local(tag: str) -> str:
    """``{namespace}Name`` → ``Name``."""
    return tag.rsplit("}", 1)[-1]


def namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def text(el: Element | None, path: str) -> str | None:
    """Stripped text at ``path`` (``{*}`` wildcard namespaces), or None when absent or empty."""
    if el is None:
        return None
    found = el.find(path)
    if found is None or found.text is None:
        return None
    value = found.text.strip()
    return value or None
