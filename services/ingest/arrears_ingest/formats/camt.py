"""ISO 20022 camt.053 (statements) and camt.054 (notifications), versions 02 to 08 → payments.

Each transaction (``TxDtls``, or the entry itself when it has none) becomes one item:
- a credit (``CRDT``) → ``ar.payment.received``;
- a debit that reverses or returns a credit (``RvslInd`` true, or ``RtrInf`` present) →
  ``ar.payment.reversed``, with the return reason code in the reason;
- any other debit, and a credit that reverses a debit, is not a receivable event: ``ignored``;
- entries whose status is not booked (``PDNG``, ``INFO``) are ignored too.

The payment id is the end-to-end id when the payer gave one (so a return of the same payment
carries the same id), else the bank's reference, else ``<message id>-<entry>-<tx>``. Remittance
information becomes the reference: structured creditor references first, then unstructured text,
then the additional transaction information.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from xml.etree.ElementTree import Element

from arrears_ingest.formats import Ignored, Rejected, to_identifier
from arrears_ingest.formats.xml import XmlRejected, local, namespace, text
from arrears_shared.money import MoneyError, is_currency, to_minor

_VERSIONS = {f"0{v}" for v in range(2, 9)}


@dataclass
class CamtTx:
    index: int
    event_id: str
    payment_id: str
    kind: str  # "received" | "reversed"
    currency: str
    amount_minor: int
    booked_at: datetime
    reference: str | None
    reason: str | None
    candidates: list[str]


def _err(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def camt_kind(root: Element) -> tuple[str, str]:
    """("053" | "054", version) of a camt document, or raise :class:`XmlRejected`."""
    ns = namespace(root.tag)
    prefix = "urn:iso:std:iso:20022:tech:xsd:camt."
    if local(root.tag) == "Document" and ns.startswith(prefix):
        message, _, version = ns[len(prefix) :].partition(".001.")
        if message in ("053", "054") and version in _VERSIONS:
            return message, version
    raise XmlRejected("not-camt", "the document is not camt.053 or camt.054 (schema versions 02 to 08)")


def _booked(entry: Element) -> datetime | None:
    for path in ("{*}BookgDt/{*}DtTm", "{*}BookgDt/{*}Dt", "{*}ValDt/{*}DtTm", "{*}ValDt/{*}Dt"):
        value = text(entry, path)
        if value is None:
            continue
        try:
            if "T" in value:
                parsed = datetime.fromisoformat(value)
                return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
        except ValueError:
            return None
    return None


def _status(entry: Element) -> str | None:
    return text(entry, "{*}Sts/{*}Cd") or text(entry, "{*}Sts")


def _reference(tx: Element | None, entry: Element) -> str | None:
    parts: list[str] = []
    if tx is not None:
        for ref in tx.findall("{*}RmtInf/{*}Strd/{*}CdtrRefInf/{*}Ref"):
            if ref.text and ref.text.strip():
                parts.append(ref.text.strip())
        for ref in tx.findall("{*}RmtInf/{*}Strd/{*}RfrdDocInf/{*}Nb"):
            if ref.text and ref.text.strip():
                parts.append(ref.text.strip())
        for ustrd in tx.findall("{*}RmtInf/{*}Ustrd"):
            if ustrd.text and ustrd.text.strip():
                parts.append(ustrd.text.strip())
        if not parts:
            extra = text(tx, "{*}AddtlTxInf")
            if extra:
                parts.append(extra)
    if not parts:
        extra = text(entry, "{*}AddtlNtryInf")
        if extra:
            parts.append(extra)
    joined = " ".join(dict.fromkeys(parts))
    return joined[:1000] or None


def _candidates(reference: str | None) -> list[str]:
    """Tokens of a reference that could be invoice numbers (for finding the paying account)."""
    if not reference:
        return []
    tokens = [reference.strip(), *reference.replace(",", " ").replace(";", " ").split()]
    return list(dict.fromkeys(t for t in tokens if 4 <= len(t) <= 128 and any(c.isdigit() for c in t)))


def map_camt(root: Element) -> list[CamtTx | Rejected | Ignored]:
    message, _ = camt_kind(root)
    body = root[0] if len(root) else None
    if body is None:
        raise XmlRejected("not-camt", "the camt document is empty")
    msg_id = text(body, "{*}GrpHdr/{*}MsgId") or "camt"
    blocks = body.findall("{*}Stmt") if message == "053" else body.findall("{*}Ntfctn")
    out: list[CamtTx | Rejected | Ignored] = []
    seen: set[str] = set()
    n = 0
    for block_no, block in enumerate(blocks, 1):
        block_id = text(block, "{*}Id") or f"{msg_id}-{block_no}"
        for entry_no, entry in enumerate(block.findall("{*}Ntry"), 1):
            txs = entry.findall("{*}NtryDtls/{*}TxDtls")
            for tx_no, tx in enumerate(txs or [None], 1):
                n += 1
                item = _map_tx(n, block_id, entry_no, tx_no, entry, tx, single=len(txs) <= 1)
                if isinstance(item, CamtTx):
                    # Two transactions of one document never share an id: a batch booking often
                    # repeats the bank's reference on each of its transactions.
                    if item.event_id in seen:
                        suffix = f"-{entry_no}-{tx_no}"
                        item.payment_id = item.payment_id[: 128 - len(suffix)] + suffix
                        item.event_id = f"camt:{item.kind}:{block_id}:{item.payment_id}"
                    seen.add(item.event_id)
                out.append(item)
    return out


def _map_tx(
    index: int, block_id: str, entry_no: int, tx_no: int, entry: Element, tx: Element | None, *, single: bool
) -> CamtTx | Rejected | Ignored:
    fallback = to_identifier(f"{block_id}-{entry_no}-{tx_no}")
    end_to_end = text(tx, "{*}Refs/{*}EndToEndId")
    if end_to_end and end_to_end.upper() == "NOTPROVIDED":
        end_to_end = None
    bank_ref = text(tx, "{*}Refs/{*}AcctSvcrRef") or text(tx, "{*}Refs/{*}TxId")
    if bank_ref is None and single:
        bank_ref = text(entry, "{*}AcctSvcrRef")
    payment_id = to_identifier(end_to_end or bank_ref or "") or fallback
    status = _status(entry)
    if status is not None and status.upper() not in ("BOOK", "BOOKED"):
        return Ignored(index, payment_id, f"entry status {status} is not booked")
    direction = text(tx, "{*}CdtDbtInd") or text(entry, "{*}CdtDbtInd")
    reversal = (text(entry, "{*}RvslInd") or "false").lower() == "true"
    returned = tx is not None and tx.find("{*}RtrInf") is not None
    if direction not in ("CRDT", "DBIT"):
        return Rejected(index, payment_id, [_err("CdtDbtInd", "must be CRDT or DBIT")])
    if direction == "CRDT" and not reversal and not returned:
        kind = "received"
    elif direction == "DBIT" and (reversal or returned):
        kind = "reversed"
    else:
        return Ignored(index, payment_id, "a debit, or a reversal of one, is not a customer payment")

    # One transaction: the entry's booked amount (in the account's currency) is authoritative.
    # A batch booking: each transaction's own amount.
    amount_el = entry.find("{*}Amt") if single else None
    if amount_el is None and tx is not None:
        amount_el = tx.find("{*}Amt")
        if amount_el is None:
            amount_el = tx.find("{*}AmtDtls/{*}TxAmt/{*}Amt")
    if amount_el is None or not (amount_el.text or "").strip():
        return Rejected(index, payment_id, [_err("Amt", "the transaction amount is missing")])
    currency = amount_el.get("Ccy") or ""
    if not is_currency(currency):
        return Rejected(index, payment_id, [_err("Amt@Ccy", "unknown currency: expected an active ISO 4217 code")])
    try:
        minor = to_minor((amount_el.text or "").strip(), currency)
    except MoneyError as exc:
        return Rejected(index, payment_id, [_err("Amt", str(exc))])
    if minor <= 0:
        return Rejected(index, payment_id, [_err("Amt", "a transaction amount must be positive")])
    booked = _booked(entry)
    if booked is None:
        return Rejected(index, payment_id, [_err("BookgDt", "booking and value dates are missing or impossible")])
    reference = _reference(tx, entry)
    reason = None
    if kind == "reversed":
        code = text(tx, "{*}RtrInf/{*}Rsn/{*}Cd") or text(tx, "{*}RtrInf/{*}Rsn/{*}Prtry")
        reason = f"bank return, reason code {code}" if code else "bank reversal"
    event_id = f"camt:{kind}:{payment_id}"
    if payment_id == fallback or kind == "reversed":
        event_id = f"camt:{kind}:{fallback}:{payment_id}"
    return CamtTx(index, event_id, payment_id, kind, currency, minor, booked, reference, reason, _candidates(reference))
