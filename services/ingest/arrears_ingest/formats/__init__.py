"""Pure mappers from ERP and bank formats (UBL, camt, CSV) to canonical ledger events.

Nothing here touches the database or the network: each mapper turns bytes into a list of
:class:`Mapped` events and :class:`Rejected` items, which the documents service then accepts
through the same checks as ``POST /v1/events``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_NOT_ID = re.compile(r"[^A-Za-z0-9._:/@+-]+")


@dataclass
class Mapped:
    """One canonical event built from a document: ``index`` is its row or entry number (1-based)."""

    index: int
    id: str
    type: str
    data: dict[str, Any]
    time: str | None = None
    default_due: bool = False  # the due date came from the default terms: the account's own terms win


@dataclass
class Rejected:
    index: int
    id: str | None
    errors: list[dict[str, str]]


@dataclass
class Ignored:
    """Valid input that is not a receivable event (a debit on the creditor's own account)."""

    index: int
    id: str | None
    reason: str


@dataclass
class MapResult:
    items: list[Mapped | Rejected | Ignored] = field(default_factory=list)


def to_identifier(text: str) -> str:
    """An ERP reference made fit for an Arrears identifier: runs of other characters become '-'."""
    cleaned = _NOT_ID.sub("-", text.strip()).strip("-._:/@+")
    return cleaned[:128]
