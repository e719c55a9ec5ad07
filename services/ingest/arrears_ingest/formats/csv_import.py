"""AR open-items CSV (one row per invoice) → ``ar.invoice.issued`` (and settlements).

Columns (header row required, names case-insensitive, order free):

| column | required | meaning |
|---|---|---|
| account_id | yes | the customer account |
| invoice_number | yes | the invoice number as printed |
| invoice_id | no | the ERP's invoice id (default ``<account_id>/<invoice_number>``) |
| issue_date | yes | ISO 8601 ``YYYY-MM-DD`` (or ``M/D/YYYY``) |
| due_date | no | as issue_date; default issue_date + terms_days (or the default terms) |
| currency | yes, unless given as ?currency= | ISO 4217 code |
| amount | yes | the open amount, a decimal string (``1234.50``) |
| tax | no | tax included in amount, a decimal string |
| purchase_order | no | the buyer's order reference |
| terms_days | no | days of credit, 0 to 365 |
| settled_date | no | the day the invoice was paid in full: also emits ``ar.payment.received`` |

The IBM receivables sample's columns are accepted too: ``customerID`` (account), ``invoiceNumber``,
``InvoiceDate``, ``DueDate``, ``InvoiceAmount`` and ``SettledDate``; its other columns are ignored.
It has no currency column, so ``?currency=`` is required for it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from arrears_ingest.formats import Mapped, Rejected, to_identifier
from arrears_shared.money import MoneyError, is_currency, to_minor

ALIASES = {
    "customerid": "account_id",
    "invoicenumber": "invoice_number",
    "invoicedate": "issue_date",
    "duedate": "due_date",
    "invoiceamount": "amount",
    "settleddate": "settled_date",
    "open_amount": "amount",
}
REQUIRED = ("account_id", "invoice_number", "issue_date", "amount")


class CsvRejected(ValueError):
    """The file as a whole cannot be read (no header, missing columns, not UTF-8)."""


@dataclass(frozen=True)
class CsvOptions:
    currency: str | None = None
    default_terms_days: int = 30
    max_rows: int = 100_000


def _err(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def parse_date(value: str) -> date:
    value = value.strip()
    if "/" in value:
        return datetime.strptime(value, "%m/%d/%Y").date()
    return date.fromisoformat(value)


def _column(name: str) -> str:
    key = name.strip().lstrip("\ufeff").lower()
    return ALIASES.get(key.replace(" ", ""), key)


def map_csv(body: bytes, options: CsvOptions) -> list[Mapped | Rejected]:
    try:
        decoded = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvRejected(f"the file is not UTF-8 (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(decoded, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise CsvRejected("the file is empty; it needs a header row") from None
    except csv.Error as exc:
        raise CsvRejected(f"the header row is not valid CSV: {exc}") from None
    columns = [_column(h) for h in header]
    missing = [c for c in REQUIRED if c not in columns]
    if "currency" not in columns and options.currency is None:
        missing.append("currency (or ?currency=)")
    if missing:
        raise CsvRejected("missing column(s): " + ", ".join(missing))
    if len(set(columns)) != len(columns):
        raise CsvRejected("a column appears twice in the header")
    if options.currency is not None and not is_currency(options.currency):
        raise CsvRejected("?currency= is not an active ISO 4217 code")
    out: list[Mapped | Rejected] = []
    row_no = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row_no += 1
            out.append(Rejected(row_no, None, [_err("(row)", f"not valid CSV: {exc}")]))
            continue
        row_no += 1
        if not cells or all(not c.strip() for c in cells):
            continue
        if row_no - 1 > options.max_rows:
            raise CsvRejected(f"a file holds at most {options.max_rows} rows")
        if len(cells) != len(columns):
            out.append(
                Rejected(row_no, None, [_err("(row)", f"has {len(cells)} fields; the header has {len(columns)}")])
            )
            continue
        out.extend(_map_row(row_no, dict(zip(columns, cells, strict=True)), options))
    return out


def _map_row(row_no: int, row: dict[str, str], options: CsvOptions) -> list[Mapped | Rejected]:
    errors: list[dict[str, str]] = []
    account = to_identifier(row["account_id"])
    number = row["invoice_number"].strip()
    if not account:
        errors.append(_err("account_id", "empty"))
    if not number:
        errors.append(_err("invoice_number", "empty"))
    invoice_id = to_identifier(row.get("invoice_id", "").strip() or f"{account}/{number}")
    currency = (row.get("currency") or "").strip().upper() or options.currency or ""
    if not is_currency(currency):
        errors.append(_err("currency", "unknown currency: expected an active ISO 4217 code"))
    dates: dict[str, date | None] = {}
    for name in ("issue_date", "due_date", "settled_date"):
        raw = (row.get(name) or "").strip()
        dates[name] = None
        if raw:
            try:
                dates[name] = parse_date(raw)
            except ValueError:
                errors.append(_err(name, "not a real calendar date (YYYY-MM-DD or M/D/YYYY)"))
        elif name == "issue_date":
            errors.append(_err(name, "empty"))
    amounts: dict[str, int | None] = {"amount": None, "tax": None}
    if is_currency(currency):
        for name in ("amount", "tax"):
            raw = (row.get(name) or "").strip()
            if not raw:
                if name == "amount":
                    errors.append(_err(name, "empty"))
                continue
            if raw.startswith("-"):
                errors.append(_err(name, "a negative amount: send a credit note (ar.credit_note.issued) instead"))
                continue
            try:
                amounts[name] = to_minor(raw, currency)
            except MoneyError as exc:
                errors.append(_err(name, str(exc).replace(repr(raw), "the amount")))
    terms_raw = (row.get("terms_days") or "").strip()
    terms_days: int | None = None
    if terms_raw:
        if terms_raw.isdigit() and int(terms_raw) <= 365:
            terms_days = int(terms_raw)
        else:
            errors.append(_err("terms_days", "a whole number of days, 0 to 365"))
    event_id = f"csv:invoice:{invoice_id}" if invoice_id else None
    issue, due, settled = dates["issue_date"], dates["due_date"], dates["settled_date"]
    amount = amounts["amount"]
    if errors or issue is None or amount is None:
        return [Rejected(row_no, event_id, errors)]
    assert event_id is not None
    default_due = due is None and terms_days is None
    if due is None:
        due = issue + timedelta(days=terms_days if terms_days is not None else options.default_terms_days)
    data: dict[str, object] = {
        "invoice_id": invoice_id,
        "invoice_number": number,
        "account_id": account,
        "issue_date": issue.isoformat(),
        "due_date": due.isoformat(),
        "currency": currency,
        "amount_minor": amount,
    }
    if amounts["tax"] is not None:
        data["tax_minor"] = amounts["tax"]
    if terms_days is not None:
        data["terms"] = {"code": f"NET{terms_days}"}
    po = (row.get("purchase_order") or "").strip()
    if po:
        data["purchase_order"] = po
    out: list[Mapped | Rejected] = [Mapped(row_no, event_id, "ar.invoice.issued", data, default_due=default_due)]
    if settled is not None and amount > 0:
        out.append(
            Mapped(
                row_no,
                f"csv:settlement:{invoice_id}",
                "ar.payment.received",
                {
                    "payment_id": to_identifier(f"settlement/{invoice_id}"),
                    "account_id": account,
                    "currency": currency,
                    "amount_minor": amount,
                    "received_at": f"{settled.isoformat()}T00:00:00Z",
                    "reference": number,
                    "allocations": [{"invoice_id": invoice_id, "amount_minor": amount}],
                },
            )
        )
    return out
