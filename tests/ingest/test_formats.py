"""The pure mappers: UBL, camt and CSV to canonical ledger data, and hostile or malformed input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from arrears_ingest.formats import Ignored, Mapped, Rejected
from arrears_ingest.formats.camt import CamtTx, map_camt
from arrears_ingest.formats.csv_import import CsvOptions, CsvRejected, map_csv
from arrears_ingest.formats.ubl import UblOptions, map_ubl, terms_days
from arrears_ingest.formats.xml import XmlRejected, parse_xml

FIXTURES = Path(__file__).parent / "fixtures"


def ubl(
    *,
    number: str = "INV-1",
    issue: str = "2026-01-10",
    due: str | None = "2026-02-09",
    currency: str = "EUR",
    total: str = "100.00",
    tax: str = "0",
    terms: str = "",
    account: str = "7300010000001",
) -> bytes:
    template = (FIXTURES / "invoice_jpy.xml").read_text()
    return template.format(
        number=number,
        issue=issue,
        due=f"<cbc:DueDate>{due}</cbc:DueDate>" if due else "",
        currency=currency,
        total=total,
        tax=tax,
        terms=terms,
        account=account,
    ).encode()


def mapped(body: bytes, **kw: object) -> Mapped:
    out = map_ubl(parse_xml(body), UblOptions(**kw))  # type: ignore[arg-type]
    assert isinstance(out, Mapped), out
    return out


def rejected(body: bytes) -> list[dict[str, str]]:
    out = map_ubl(parse_xml(body), UblOptions())
    assert isinstance(out, Rejected), out
    return out.errors


# ------------------------------------------------------------------------------------------- UBL


def test_ubl_invoice_amounts_exact_in_minor_units() -> None:
    out = mapped(ubl(currency="JPY", total="125000", tax="11364"))
    assert out.type == "ar.invoice.issued"
    assert out.data["amount_minor"] == 125000
    assert out.data["tax_minor"] == 11364
    assert out.data["account_id"] == "0088:7300010000001"
    assert out.data["invoice_id"] == "0088:7300010000001/INV-1"
    assert mapped(ubl(currency="BHD", total="1.005")).data["amount_minor"] == 1005


def test_ubl_rejects_jpy_decimals_unknown_currency_impossible_date_negative_total() -> None:
    assert rejected(ubl(currency="JPY", total="100.50"))[0]["field"] == "cac:LegalMonetaryTotal/cbc:PayableAmount"
    assert "no decimals" in rejected(ubl(currency="JPY", total="100.50"))[0]["message"]
    assert rejected(ubl(currency="XYZ"))[0]["field"] == "cbc:DocumentCurrencyCode"
    assert rejected(ubl(issue="2026-02-30"))[0]["field"] == "cbc:IssueDate"
    assert rejected(ubl(due="2026-13-01"))[0]["field"] == "cbc:DueDate"
    negative = rejected(ubl(total="-10.00"))
    assert "BillingReference" in negative[0]["message"]
    assert "too many" not in rejected(ubl(total="1.001"))[0]["message"]


def test_ubl_due_date_from_terms_then_default() -> None:
    assert mapped(ubl(due=None, terms="Payment within 10 days")).data["due_date"] == "2026-01-20"
    assert mapped(ubl(due=None, terms="Net 45")).data["due_date"] == "2026-02-24"
    assert mapped(ubl(due=None, terms="")).data["due_date"] == "2026-02-09"
    assert mapped(ubl(due=None, terms=""), default_terms_days=14).data["due_date"] == "2026-01-24"
    assert terms_days("2 % discount if paid within 2 days") == 2
    assert terms_days("50% prepaid, 50% within one month") is None


def test_ubl_account_override_and_not_ubl() -> None:
    assert mapped(ubl(), account_id="ACC-9").data["account_id"] == "ACC-9"
    with pytest.raises(XmlRejected) as exc:
        map_ubl(parse_xml(b"<Order xmlns='urn:x'/>"), UblOptions())
    assert exc.value.kind == "not-ubl"


HOSTILE = {
    "billion laughs": b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2">&lol3;</Invoice>""",
    "external entity": b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"><ID>&xxe;</ID></Invoice>""",
    "external DTD over the network": b"""<?xml version="1.0"?>
<!DOCTYPE Invoice SYSTEM "http://127.0.0.1:9/evil.dtd">
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"/>""",
    "parameter entity": b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p"> %p;]><Invoice/>""",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_xml_is_refused_without_expansion_or_fetching(name: str) -> None:
    with pytest.raises(XmlRejected) as exc:
        parse_xml(HOSTILE[name])
    assert exc.value.kind == "hostile-xml"


def test_malformed_xml_names_the_position() -> None:
    with pytest.raises(XmlRejected) as exc:
        parse_xml(b"<Invoice><ID>1</Invoice>")
    assert exc.value.kind == "malformed-xml"
    assert "line 1" in str(exc.value)


# ------------------------------------------------------------------------------------------ camt

CAMT = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.{version}">
 <BkToCstmrDbtCdtNtfctn>
  <GrpHdr><MsgId>MSG-1</MsgId><CreDtTm>2026-01-05T10:00:00</CreDtTm></GrpHdr>
  <Ntfctn>
   <Id>N-1</Id>
   {entries}
  </Ntfctn>
 </BkToCstmrDbtCdtNtfctn>
</Document>"""


def entry(
    amount: str = "100.00",
    ccy: str = "EUR",
    ind: str = "CRDT",
    reversal: bool = False,
    e2e: str = "E2E-1",
    ref: str = "INV-1",
    ret: str | None = None,
    booked: str = "2026-01-05",
) -> str:
    rtr = f"<RtrInf><Rsn><Cd>{ret}</Cd></Rsn></RtrInf>" if ret else ""
    return f"""<Ntry><Amt Ccy="{ccy}">{amount}</Amt><CdtDbtInd>{ind}</CdtDbtInd>
      <RvslInd>{"true" if reversal else "false"}</RvslInd><Sts>BOOK</Sts><BookgDt><Dt>{booked}</Dt></BookgDt>
      <NtryDtls><TxDtls><Refs><EndToEndId>{e2e}</EndToEndId></Refs>
      <RmtInf><Strd><CdtrRefInf><Ref>{ref}</Ref></CdtrRefInf></Strd></RmtInf>{rtr}</TxDtls></NtryDtls></Ntry>"""


def camt(*entries: str, version: str = "04") -> list[CamtTx | Rejected | Ignored]:
    return map_camt(parse_xml(CAMT.format(version=version, entries="".join(entries)).encode()))


def test_camt_credit_reversal_return_and_debit() -> None:
    out = camt(
        entry(),
        entry(ind="DBIT", reversal=True, e2e="E2E-0", ret="AC06"),
        entry(ind="DBIT", e2e="E2E-2", ret="MD06"),
        entry(ind="DBIT", e2e="OUT-1"),
    )
    first, reversed_, returned, debit = out
    assert isinstance(first, CamtTx)
    assert (first.kind, first.amount_minor, first.currency, first.reference) == ("received", 10000, "EUR", "INV-1")
    assert first.booked_at == datetime(2026, 1, 5, tzinfo=UTC)
    assert isinstance(reversed_, CamtTx)
    assert reversed_.kind == "reversed"
    assert reversed_.payment_id == "E2E-0"
    assert reversed_.reason == "bank return, reason code AC06"
    assert isinstance(returned, CamtTx)
    assert returned.kind == "reversed"
    assert "MD06" in (returned.reason or "")
    assert isinstance(debit, Ignored)


@pytest.mark.parametrize("version", ["02", "03", "04", "05", "06", "07", "08"])
def test_camt_versions_02_to_08(version: str) -> None:
    (tx,) = camt(entry(), version=version)
    assert isinstance(tx, CamtTx)
    assert tx.amount_minor == 10000


def test_camt_rejects_bad_amounts_and_unknown_version() -> None:
    jpy, unknown, bad_date = camt(
        entry(amount="10.5", ccy="JPY"), entry(ccy="ABC", e2e="E2"), entry(booked="2026-02-31", e2e="E3")
    )
    assert isinstance(jpy, Rejected)
    assert "JPY" in jpy.errors[0]["message"]
    assert isinstance(unknown, Rejected)
    assert unknown.errors[0]["field"] == "Amt@Ccy"
    assert isinstance(bad_date, Rejected)
    assert bad_date.errors[0]["field"] == "BookgDt"
    with pytest.raises(XmlRejected):
        map_camt(parse_xml(CAMT.format(version="09", entries="").encode()))


def test_camt_repeated_reference_in_one_file_keeps_both_payments() -> None:
    a, b = camt(entry(e2e="SAME"), entry(e2e="SAME", amount="5.00"))
    assert isinstance(a, CamtTx)
    assert isinstance(b, CamtTx)
    assert a.event_id != b.event_id
    assert a.payment_id != b.payment_id


# ------------------------------------------------------------------------------------------- CSV

HEADER = "account_id,invoice_number,issue_date,due_date,currency,amount,tax,terms_days\n"


def test_csv_rows_map_and_bad_rows_are_named() -> None:
    body = (
        HEADER
        + "ACC-1,INV-1,2026-01-10,2026-02-09,EUR,1234.50,200.00,\n"
        + "ACC-1,INV-2,2026-01-10,,JPY,1000.5,,\n"
        + "ACC-1,INV-3,2026-02-30,,EUR,10,,\n"
        + "ACC-1,INV-4,2026-01-10,,XXX,10,,\n"
        + "ACC-1,INV-5,2026-01-10,,EUR,-10,,\n"
        + "ACC-1,INV-6,2026-01-10,,EUR,10,,14\n"
        + "ACC-1,INV-7,2026-01-10\n"
        + "\n"
    ).encode()
    out = map_csv(body, CsvOptions())
    assert isinstance(out[0], Mapped)
    assert out[0].data["amount_minor"] == 123450
    assert out[0].data["tax_minor"] == 20000
    assert isinstance(out[1], Rejected)
    assert out[1].index == 3
    assert out[1].errors[0]["field"] == "amount"
    assert isinstance(out[2], Rejected)
    assert out[2].errors[0]["field"] == "issue_date"
    assert isinstance(out[3], Rejected)
    assert out[3].errors[0]["field"] == "currency"
    assert isinstance(out[4], Rejected)
    assert out[4].errors[0]["field"] == "amount"
    assert isinstance(out[5], Mapped)
    assert out[5].data["due_date"] == "2026-01-24"
    assert isinstance(out[6], Rejected)
    assert "fields" in out[6].errors[0]["message"]
    assert len(out) == 7


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"account_id,amount\nA,1\n", "missing column"),
        (b"\xff\xfe\x00garbage", "UTF-8"),
        (HEADER.replace("currency,", "").encode(), "currency"),
        (b"account_id,account_id,invoice_number,issue_date,amount,currency\n", "twice"),
    ],
)
def test_csv_whole_file_problems(body: bytes, message: str) -> None:
    with pytest.raises(CsvRejected) as exc:
        map_csv(body, CsvOptions())
    assert message in str(exc.value)


def test_csv_unterminated_quote_rejects_the_row_not_the_file() -> None:
    body = (HEADER + 'ACC-1,"INV-1,2026-01-10,,EUR,10,,\n').encode()
    out = map_csv(body, CsvOptions())
    assert all(isinstance(o, Rejected) for o in out)
    assert len(out) == 1


def test_csv_row_limit() -> None:
    body = (HEADER + "ACC-1,INV-1,2026-01-10,,EUR,10,,\n" * 3).encode()
    with pytest.raises(CsvRejected):
        map_csv(body, CsvOptions(max_rows=2))


def test_ibm_csv_variant_with_missing_values_maps_every_row(shared_data: Path) -> None:
    body = (shared_data / "ar" / "WA_Fn-UseC_-Accounts-Receivable_with_missing.csv").read_bytes()
    out = map_csv(body, CsvOptions(currency="USD"))
    invoices = [o for o in out if isinstance(o, Mapped) and o.type == "ar.invoice.issued"]
    assert not [o for o in out if isinstance(o, Rejected)]
    assert len(invoices) == 2586
    assert invoices[0].data["amount_minor"] == 4707
    assert invoices[0].data["invoice_number"] == "2195380883"
