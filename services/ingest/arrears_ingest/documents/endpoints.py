"""POST /v1/invoices/ubl, POST /v1/payments/camt, POST /v1/imports/csv and GET /v1/imports/{id}."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from arrears_ingest.auth.dependency import CallerDep
from arrears_ingest.deps import DocumentServiceDep, RuntimeDep, SettingsDep
from arrears_ingest.documents.service import ImportResult
from arrears_ingest.formats.csv_import import CsvOptions, CsvRejected
from arrears_ingest.formats.ubl import UblOptions
from arrears_ingest.formats.xml import XmlRejected
from arrears_shared.events.fields import Identifier
from arrears_shared.http import Problem, problem_response

router = APIRouter(prefix="/v1", tags=["documents"])

_XML = ("application/xml", "text/xml")
_CSV = ("text/csv", "application/csv", "text/plain")


class ItemError(BaseModel):
    field: str
    message: str


class ImportItemOut(BaseModel):
    index: int
    id: str | None
    type: str | None
    status: Literal["accepted", "duplicate", "conflict", "rejected", "ignored"]
    errors: list[ItemError] = []


class ImportOut(BaseModel):
    import_id: str
    format: Literal["ubl", "camt", "csv"]
    source: str
    filename: str | None = None
    created_at: datetime
    accepted: int
    duplicates: int
    conflicts: int
    rejected: int
    ignored: int
    items: list[ImportItemOut]


def _out(result: ImportResult) -> dict[str, Any]:
    counts = result.counts()
    return {
        "import_id": result.import_id,
        "format": result.format,
        "source": result.source,
        "filename": result.filename,
        "created_at": result.created_at.isoformat(),
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "conflicts": counts["conflict"],
        "rejected": counts["rejected"],
        "ignored": counts["ignored"],
        "items": [i.as_dict() for i in result.items],
    }


async def _body(request: Request, allowed: tuple[str, ...], what: str) -> bytes:
    ctype = request.headers.get("content-type", allowed[0]).split(";")[0].strip().lower()
    if ctype not in allowed:
        raise Problem(415, "Unsupported Media Type", f"send {what} as {' or '.join(allowed)}")
    body = await request.body()
    if not body.strip():
        raise Problem(422, "Unprocessable Content", "the body is empty", type="validation")
    return body


def _xml_problem(exc: XmlRejected) -> Problem:
    status = {"hostile-xml": 400, "malformed-xml": 400, "too-large": 413}.get(exc.kind, 422)
    titles = {400: "Bad Request", 413: "Content Too Large", 422: "Unprocessable Content"}
    return Problem(status, titles[status], str(exc), type=exc.kind)


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ImportOut, "description": "The import: every item's outcome"},
    400: {"description": "Malformed or hostile XML (DTD, entities) (problem body)"},
    401: {"description": "Missing or invalid API key or signature (problem body)"},
    413: {"description": "Body or file too large (problem body)"},
    415: {"description": "Wrong content type (problem body)"},
    422: {"description": "Not a document of this kind (problem body)"},
}


@router.post(
    "/invoices/ubl",
    status_code=202,
    responses={
        **_RESPONSES,
        202: {"model": ImportOut, "description": "The invoice or credit note was accepted"},
        409: {"description": "The invoice number already belongs to another document of the account"},
        422: {"description": "Not a UBL Invoice/CreditNote, or invalid (problem body naming the elements)"},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/xml": {"schema": {"type": "string"}}}}},
)
async def post_ubl(
    request: Request,
    caller: CallerDep,
    runtime: RuntimeDep,
    service: DocumentServiceDep,
    settings: SettingsDep,
    account_id: Annotated[Identifier | None, Query(description="The account, when the buyer has no id")] = None,
    default_terms_days: Annotated[
        int | None, Query(ge=0, le=365, description="Days of credit when the invoice states no due date or terms")
    ] = None,
) -> JSONResponse:
    """One UBL 2.1 Invoice or CreditNote (Peppol BIS Billing 3.0)."""
    body = await _body(request, _XML, "UBL")
    options = UblOptions(
        default_terms_days=settings.default_terms_days if default_terms_days is None else default_terms_days,
        account_id=account_id,
    )
    try:
        async with runtime.sessionmaker() as session, session.begin():
            result = await service.ubl(
                session, body, source=caller.source or "urn:arrears:ubl", options=options, now=runtime.clock.now()
            )
    except XmlRejected as exc:
        raise _xml_problem(exc) from None
    runtime.relay.wake()
    out = _out(result)
    item = result.items[0]
    if item.status == "rejected":
        fields = ", ".join(dict.fromkeys(e["field"] for e in item.errors))
        return problem_response(
            422, "Unprocessable Content", f"invalid: {fields}", type="validation", instance=request.url.path, **out
        )
    if item.status == "conflict":
        return problem_response(
            409, "Conflict", item.errors[0]["message"], type="invoice-number-conflict", instance=request.url.path, **out
        )
    return JSONResponse(out, status_code=202 if item.status == "accepted" else 200)


@router.post(
    "/payments/camt",
    responses=_RESPONSES,
    openapi_extra={"requestBody": {"required": True, "content": {"application/xml": {"schema": {"type": "string"}}}}},
)
async def post_camt(
    request: Request,
    caller: CallerDep,
    runtime: RuntimeDep,
    service: DocumentServiceDep,
    settings: SettingsDep,
    account_id: Annotated[
        Identifier | None, Query(description="The paying account, for a file of one customer's payments")
    ] = None,
) -> JSONResponse:
    """A camt.053 statement or camt.054 notification (versions 02 to 08): credits become payments,
    returned or reversed credits become reversals, other debits are ignored."""
    body = await _body(request, _XML, "camt")
    try:
        async with runtime.sessionmaker() as session, session.begin():
            result = await service.camt(
                session,
                body,
                source=caller.source or "urn:arrears:camt",
                account_id=account_id,
                max_items=settings.max_import_rows,
                now=runtime.clock.now(),
            )
    except XmlRejected as exc:
        raise _xml_problem(exc) from None
    runtime.relay.wake()
    return JSONResponse(_out(result), status_code=200)


@router.post(
    "/imports/csv",
    responses=_RESPONSES,
    openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def post_csv(
    request: Request,
    caller: CallerDep,
    runtime: RuntimeDep,
    service: DocumentServiceDep,
    settings: SettingsDep,
    currency: Annotated[
        str | None, Query(min_length=3, max_length=3, description="Currency of rows without a currency column")
    ] = None,
    filename: Annotated[str | None, Query(max_length=200, description="Kept with the import")] = None,
) -> JSONResponse:
    """An AR open-items CSV export, one row per invoice. One bad row never rejects the others."""
    body = await _body(request, _CSV, "CSV")
    options = CsvOptions(
        currency=currency.upper() if currency else None,
        default_terms_days=settings.default_terms_days,
        max_rows=settings.max_import_rows,
    )
    try:
        async with runtime.sessionmaker() as session, session.begin():
            result = await service.csv(
                session,
                body,
                source=caller.source or "urn:arrears:csv",
                filename=filename,
                options=options,
                now=runtime.clock.now(),
            )
    except CsvRejected as exc:
        raise Problem(422, "Unprocessable Content", str(exc), type="malformed-csv") from None
    runtime.relay.wake()
    return JSONResponse(_out(result), status_code=200)


@router.get("/imports/{import_id}", response_model=ImportOut, responses={404: {"description": "No such import"}})
async def get_import(
    import_id: str, caller: CallerDep, runtime: RuntimeDep, service: DocumentServiceDep
) -> dict[str, Any]:
    """An import's counts and every item's outcome, with the reasons for each one not accepted."""
    async with runtime.sessionmaker() as session:
        found = await service.get(session, import_id)
    if caller.source is not None and found["source"] != caller.source:
        raise Problem(403, "Forbidden", "this import belongs to another source", type="forbidden")
    return found


class TermsIn(BaseModel):
    days: int = Field(ge=0, le=365, description="Days of credit")


class TermsOut(BaseModel):
    account_id: str
    days: int


@router.put("/accounts/{account_id}/terms", response_model=TermsOut, tags=["accounts"])
async def put_terms(
    account_id: Identifier, body: TermsIn, caller: CallerDep, runtime: RuntimeDep, service: DocumentServiceDep
) -> dict[str, Any]:
    """Set an account's default payment terms: the due date of a UBL or CSV invoice of the account
    that states neither a due date nor terms of its own is its issue date plus these days."""
    async with runtime.sessionmaker() as session, session.begin():
        await service.set_terms(session, account_id, body.days, runtime.clock.now())
    return {"account_id": account_id, "days": body.days}


@router.get(
    "/accounts/{account_id}/terms",
    response_model=TermsOut,
    tags=["accounts"],
    responses={404: {"description": "No terms set for the account"}},
)
async def get_terms(
    account_id: Identifier, caller: CallerDep, runtime: RuntimeDep, service: DocumentServiceDep
) -> dict[str, Any]:
    """An account's default payment terms."""
    async with runtime.sessionmaker() as session:
        days = await service.get_terms(session, account_id)
    if days is None:
        raise Problem(404, "Not Found", "no default terms set for this account", type="not-found")
    return {"account_id": account_id, "days": days}
