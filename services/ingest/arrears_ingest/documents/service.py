"""Turn a document or file into ledger events, accept them like ``POST /v1/events``, and record
the import with every item's outcome (so ``GET /v1/imports/{id}`` can answer later)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from arrears_ingest.documents.repository import ImportRepository, TermsRepository
from arrears_ingest.events.repository import EventRepository
from arrears_ingest.events.service import IngestService
from arrears_ingest.formats import Ignored, Mapped, Rejected
from arrears_ingest.formats.camt import CamtTx, map_camt
from arrears_ingest.formats.csv_import import CsvOptions, map_csv
from arrears_ingest.formats.ubl import UblOptions, map_ubl
from arrears_ingest.formats.xml import XmlRejected, parse_xml
from arrears_shared.errors import NotFoundError

STATUSES = ("accepted", "duplicate", "conflict", "rejected", "ignored")


@dataclass
class ImportItem:
    index: int
    id: str | None
    type: str | None
    status: str
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "type": self.type, "status": self.status, "errors": self.errors}


@dataclass
class ImportResult:
    import_id: str
    format: str
    source: str
    filename: str | None
    created_at: datetime
    items: list[ImportItem]

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for i in self.items if i.status == s) for s in STATUSES}


class DocumentService:
    def __init__(
        self,
        ingest: IngestService,
        imports: ImportRepository | None = None,
        events: EventRepository | None = None,
        terms: TermsRepository | None = None,
    ) -> None:
        self.ingest = ingest
        self.imports = imports or ImportRepository()
        self.events = events or EventRepository()
        self.terms = terms or TermsRepository()

    async def set_terms(self, session: AsyncSession, account_id: str, days: int, now: datetime) -> None:
        """An account's default terms: due dates of its invoices that state neither a date nor terms."""
        await self.terms.put(session, account_id, days, now)

    async def get_terms(self, session: AsyncSession, account_id: str) -> int | None:
        return (await self.terms.get_many(session, [account_id])).get(account_id)

    async def _apply_account_terms(self, session: AsyncSession, items: list[Mapped | Rejected | Ignored]) -> None:
        defaulted = [i for i in items if isinstance(i, Mapped) and i.default_due]
        terms = await self.terms.get_many(session, sorted({str(i.data["account_id"]) for i in defaulted}))
        for item in defaulted:
            days = terms.get(str(item.data["account_id"]))
            if days is not None:
                issue = date.fromisoformat(str(item.data["issue_date"]))
                item.data["due_date"] = (issue + timedelta(days=days)).isoformat()

    async def ubl(
        self, session: AsyncSession, body: bytes, *, source: str, options: UblOptions, now: datetime
    ) -> ImportResult:
        mapped = map_ubl(parse_xml(body), options)
        return await self._accept(session, "ubl", source, None, [mapped], now)

    async def camt(
        self, session: AsyncSession, body: bytes, *, source: str, account_id: str | None, max_items: int, now: datetime
    ) -> ImportResult:
        txs = map_camt(parse_xml(body))
        if len(txs) > max_items:
            raise XmlRejected("too-large", f"a camt file holds at most {max_items} transactions")
        items: list[Mapped | Rejected | Ignored] = []
        numbers = sorted({c for t in txs if isinstance(t, CamtTx) for c in t.candidates}) if account_id is None else []
        owners = await self.events.accounts_for_invoice_numbers(session, numbers)
        for tx in txs:
            if not isinstance(tx, CamtTx):
                items.append(tx)
                continue
            account = account_id or _account_from_reference(tx, owners)
            if account is None:
                items.append(
                    Rejected(
                        tx.index,
                        tx.event_id,
                        [
                            {
                                "field": "RmtInf",
                                "message": "no account: the remittance names no single known invoice number; "
                                "send the file again with ?account_id=",
                            }
                        ],
                    )
                )
                continue
            items.append(_camt_event(tx, account))
        return await self._accept(session, "camt", source, None, items, now)

    async def csv(
        self,
        session: AsyncSession,
        body: bytes,
        *,
        source: str,
        filename: str | None,
        options: CsvOptions,
        now: datetime,
    ) -> ImportResult:
        rows = map_csv(body, options)
        return await self._accept(session, "csv", source, filename, list(rows), now)

    async def get(self, session: AsyncSession, import_id: str) -> dict[str, Any]:
        row = await self.imports.get(session, import_id)
        if row is None:
            raise NotFoundError(f"no import {import_id}")
        return {
            "import_id": row.import_id,
            "format": row.format,
            "source": row.source,
            "filename": row.filename,
            "created_at": row.created_at,
            "accepted": row.accepted,
            "duplicates": row.duplicates,
            "conflicts": row.conflicts,
            "rejected": row.rejected,
            "ignored": row.ignored,
            "items": row.items,
        }

    async def _accept(
        self,
        session: AsyncSession,
        format: str,
        source: str,
        filename: str | None,
        items: list[Mapped | Rejected | Ignored],
        now: datetime,
    ) -> ImportResult:
        await self._apply_account_terms(session, items)
        out: list[ImportItem] = []
        events: list[dict[str, Any]] = []
        positions: list[int] = []
        for item in items:
            if isinstance(item, Rejected):
                out.append(ImportItem(item.index, item.id, None, "rejected", item.errors))
            elif isinstance(item, Ignored):
                out.append(
                    ImportItem(item.index, item.id, None, "ignored", [{"field": "(item)", "message": item.reason}])
                )
            else:
                positions.append(len(out))
                out.append(ImportItem(item.index, item.id, item.type, "rejected"))
                events.append(
                    {
                        "specversion": "1.0",
                        "id": item.id,
                        "source": source,
                        "type": item.type,
                        "time": (item.time or now.isoformat()),
                        "subject": item.data.get("account_id"),
                        "datacontenttype": "application/json",
                        "data": item.data,
                    }
                )
        results = await self.ingest.accept(session, events) if events else []
        for pos, outcome in zip(positions, results, strict=True):
            out[pos].status = "rejected" if outcome.status == "forbidden" else outcome.status
            out[pos].errors = outcome.errors
        result = ImportResult(str(uuid.uuid4()), format, source, filename, now, out)
        await self.imports.add(
            session,
            import_id=result.import_id,
            format=format,
            source=source,
            filename=filename,
            created_at=now,
            counts=result.counts(),
            items=[i.as_dict() for i in out],
        )
        return result


def _account_from_reference(tx: CamtTx, owners: dict[str, set[str]]) -> str | None:
    accounts = {a for c in tx.candidates for a in owners.get(c, set())}
    return next(iter(accounts)) if len(accounts) == 1 else None


def _camt_event(tx: CamtTx, account: str) -> Mapped:
    if tx.kind == "reversed":
        return Mapped(
            tx.index,
            tx.event_id,
            "ar.payment.reversed",
            {"payment_id": tx.payment_id, "account_id": account, "reason": tx.reason or "bank reversal"},
        )
    data: dict[str, Any] = {
        "payment_id": tx.payment_id,
        "account_id": account,
        "currency": tx.currency,
        "amount_minor": tx.amount_minor,
        "received_at": tx.booked_at.isoformat().replace("+00:00", "Z"),
        "method": "bank_transfer",
    }
    if tx.reference:
        data["reference"] = tx.reference
    return Mapped(tx.index, tx.event_id, "ar.payment.received", data)
