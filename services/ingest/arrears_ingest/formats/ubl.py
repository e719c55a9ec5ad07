"""UBL 2.1 Invoice and CreditNote (Peppol BIS Billing 3.0, EN 16931) → ledger events.

- ``Invoice`` → ``ar.invoice.issued``; ``CreditNote`` → ``ar.credit_note.issued``, its
  ``BillingReference`` naming the corrected invoice. An ``Invoice`` with a negative total is a
  documented correction only when it has a ``BillingReference``: it becomes a credit note for the
  absolute amount; without one it is rejected.
- The open amount is ``LegalMonetaryTotal/PayableAmount``: what was prepaid is not chased.
- Due date: ``cbc:DueDate``, else ``PaymentMeans/PaymentDueDate``, else the days in the
  ``PaymentTerms`` note ("within 30 days", "net 30"), else the default terms in days.
- Account: the buyer's ``PartyIdentification/ID`` (``scheme:value`` when it has a scheme), else its
  ``EndpointID`` (not an e-mail endpoint), unless the caller names the account.
- Ids: the invoice id is ``<account>/<number>``; the event id is the document's identity
  ``ubl:<Invoice|CreditNote>:<account>/<number>``, so re-sending a document is a duplicate and a
  different document with the same number for the same account is a conflict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from xml.etree.ElementTree import Element

from arrears_ingest.formats import Mapped, Rejected, to_identifier
from arrears_ingest.formats.xml import XmlRejected, local, namespace, text
from arrears_shared.money import MoneyError, is_currency, to_minor

INVOICE_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CREDIT_NOTE_NS = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
_DAYS = re.compile(
    r"(?:within|net|in)\s*(\d{1,3})\s*(?:calendar\s+)?days?|(\d{1,3})\s*days?\s*net|\bnet\s*(\d{1,3})\b", re.I
)


@dataclass(frozen=True)
class UblOptions:
    default_terms_days: int = 30
    account_id: str | None = None


def _err(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def _date(value: str | None, field: str, errors: list[dict[str, str]]) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append(_err(field, "not a real calendar date (YYYY-MM-DD)"))
        return None


def _amount(el: Element | None, field: str, currency: str | None, errors: list[dict[str, str]]) -> int | None:
    """Signed minor units of an amount element, checked against the document currency."""
    if el is None or el.text is None or not el.text.strip():
        return None
    raw = el.text.strip()
    ccy = el.get("currencyID") or currency
    if ccy is None or not is_currency(ccy):
        errors.append(_err(field, "unknown currency: expected an active ISO 4217 code"))
        return None
    if currency is not None and ccy != currency:
        errors.append(_err(field, "currencyID differs from DocumentCurrencyCode"))
        return None
    negative = raw.startswith("-")
    try:
        minor = to_minor(raw.lstrip("-+"), ccy)
    except MoneyError as exc:
        errors.append(_err(field, str(exc).replace(repr(raw.lstrip("-+")), "the amount")))
        return None
    return -minor if negative else minor


def _party_id(party: Element | None) -> str | None:
    if party is None:
        return None
    for ident in party.findall("{*}PartyIdentification/{*}ID"):
        if ident.text and ident.text.strip():
            scheme = ident.get("schemeID")
            return to_identifier(f"{scheme}:{ident.text.strip()}" if scheme else ident.text.strip()) or None
    endpoint = party.find("{*}EndpointID")
    if endpoint is not None and endpoint.text and endpoint.get("schemeID") != "EM":
        scheme = endpoint.get("schemeID")
        return to_identifier(f"{scheme}:{endpoint.text.strip()}" if scheme else endpoint.text.strip()) or None
    return None


def terms_days(note: str | None) -> int | None:
    """Days of credit named in a payment terms note ("Payment within 30 days", "Net 30"), if any."""
    if not note:
        return None
    match = _DAYS.search(note)
    if match is None:
        return None
    return int(next(g for g in match.groups() if g is not None))


def map_ubl(root: Element, options: UblOptions) -> Mapped | Rejected:
    kind = local(root.tag)
    ns = namespace(root.tag)
    if (kind, ns) not in (("Invoice", INVOICE_NS), ("CreditNote", CREDIT_NOTE_NS)):
        raise XmlRejected("not-ubl", "the document is neither a UBL 2.1 Invoice nor a CreditNote")
    errors: list[dict[str, str]] = []
    number = text(root, "{*}ID")
    if number is None:
        errors.append(_err("cbc:ID", "the invoice number is missing"))
    currency = text(root, "{*}DocumentCurrencyCode")
    if currency is None:
        errors.append(_err("cbc:DocumentCurrencyCode", "missing"))
    elif not is_currency(currency):
        errors.append(_err("cbc:DocumentCurrencyCode", "unknown currency: expected an active ISO 4217 code"))
        currency = None
    issue = _date(text(root, "{*}IssueDate"), "cbc:IssueDate", errors)
    if issue is None and not any(e["field"] == "cbc:IssueDate" for e in errors):
        errors.append(_err("cbc:IssueDate", "missing"))
    customer = root.find("{*}AccountingCustomerParty/{*}Party")
    account = options.account_id or _party_id(customer)
    if account is None:
        errors.append(
            _err("cac:AccountingCustomerParty", "the buyer has no PartyIdentification or EndpointID; pass account_id")
        )
    totals = root.find("{*}LegalMonetaryTotal")
    payable = _amount(
        totals.find("{*}PayableAmount") if totals is not None else None,
        "cac:LegalMonetaryTotal/cbc:PayableAmount",
        currency,
        errors,
    )
    if payable is None and not any("PayableAmount" in e["field"] for e in errors):
        errors.append(_err("cac:LegalMonetaryTotal/cbc:PayableAmount", "missing"))
    tax: int | None = None
    for tax_total in root.findall("{*}TaxTotal"):
        amount_el = tax_total.find("{*}TaxAmount")
        if amount_el is not None and (currency is None or amount_el.get("currencyID") == currency):
            tax = _amount(amount_el, "cac:TaxTotal/cbc:TaxAmount", currency, errors)
            break
    referenced = text(root, "{*}BillingReference/{*}InvoiceDocumentReference/{*}ID")
    doc_id = f"{account}/{number}" if account and number else None
    event_id = f"ubl:{kind}:{doc_id}" if doc_id else None
    if errors or number is None or currency is None or issue is None or account is None or payable is None:
        return Rejected(1, event_id, errors)

    invoice_id = to_identifier(f"{account}/{number}")
    ref_invoice_id = to_identifier(f"{account}/{referenced}") if referenced else None
    if kind == "CreditNote" or payable < 0:
        if kind == "Invoice" and ref_invoice_id is None:
            return Rejected(
                1,
                event_id,
                [
                    _err(
                        "cac:LegalMonetaryTotal/cbc:PayableAmount",
                        "a negative invoice total is accepted only as a correction naming the corrected "
                        "invoice in cac:BillingReference; send a CreditNote",
                    )
                ],
            )
        if kind == "CreditNote" and payable < 0:
            return Rejected(
                1, event_id, [_err("cac:LegalMonetaryTotal/cbc:PayableAmount", "a credit note with a negative total")]
            )
        amount = abs(payable)
        if amount == 0:
            return Rejected(1, event_id, [_err("cac:LegalMonetaryTotal/cbc:PayableAmount", "a credit note of zero")])
        data: dict[str, Any] = {
            "credit_note_id": invoice_id,
            "account_id": account,
            "currency": currency,
            "amount_minor": amount,
            "issue_date": issue.isoformat(),
        }
        if ref_invoice_id:
            data["invoice_id"] = ref_invoice_id
        return Mapped(1, f"ubl:{kind}:{invoice_id}", "ar.credit_note.issued", data)

    due = _date(text(root, "{*}DueDate"), "cbc:DueDate", errors) or _date(
        text(root, "{*}PaymentMeans/{*}PaymentDueDate"), "cac:PaymentMeans/cbc:PaymentDueDate", errors
    )
    if errors:
        return Rejected(1, event_id, errors)
    note_days = terms_days(" ".join(n.text or "" for n in root.findall("{*}PaymentTerms/{*}Note")))
    default_due = due is None and note_days is None
    if due is None:
        due = issue + timedelta(days=note_days if note_days is not None else options.default_terms_days)
    data = {
        "invoice_id": invoice_id,
        "invoice_number": number[:128],
        "account_id": account,
        "issue_date": issue.isoformat(),
        "due_date": due.isoformat(),
        "currency": currency,
        "amount_minor": payable,
    }
    if tax is not None and 0 <= tax <= payable:
        data["tax_minor"] = tax
    if note_days is not None:
        data["terms"] = {"code": f"NET{note_days}"}
    order = text(root, "{*}OrderReference/{*}ID")
    if order:
        data["purchase_order"] = order[:128]
    return Mapped(1, f"ubl:{kind}:{invoice_id}", "ar.invoice.issued", data, default_due=default_due)
