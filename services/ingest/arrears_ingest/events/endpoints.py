"""POST /v1/events: one CloudEvent, or a JSON array of up to 1,000."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from arrears_ingest.auth.dependency import CallerDep
from arrears_ingest.deps import IngestServiceDep, RuntimeDep, SettingsDep
from arrears_ingest.events.service import ItemResult
from arrears_shared.http import Problem, problem_response

router = APIRouter(prefix="/v1", tags=["events"])


class FieldError(BaseModel):
    field: str
    message: str


class ItemOut(BaseModel):
    index: int
    id: str | None
    status: Literal["accepted", "duplicate", "conflict", "rejected", "forbidden"]
    errors: list[FieldError] = []


class BatchOut(BaseModel):
    accepted: int
    duplicates: int
    conflicts: int
    rejected: int
    forbidden: int = 0
    items: list[ItemOut]


class SingleOut(BaseModel):
    id: str
    status: Literal["accepted", "duplicate"]


_EVENT_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"$ref": "#/components/schemas/CloudEventIn"},
        {"type": "array", "maxItems": 1000, "items": {"$ref": "#/components/schemas/CloudEventIn"}},
    ]
}


async def read_json(request: Request) -> Any:
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype not in ("application/json", "application/cloudevents+json", "application/cloudevents-batch+json"):
        raise Problem(415, "Unsupported Media Type", "send application/json or application/cloudevents+json")
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise Problem(
            400, "Bad Request", f"body is not valid JSON (at position {exc.pos})", type="malformed-json"
        ) from None


@router.post(
    "/events",
    status_code=202,
    responses={
        202: {"model": SingleOut, "description": "A single event accepted"},
        200: {"model": BatchOut, "description": "A batch: the outcome of every item (or a single duplicate)"},
        401: {"description": "Missing or invalid API key or signature (problem body)"},
        403: {"description": "A single event of a source this API key may not send (problem body)"},
        409: {"description": "Invoice number already used by another invoice of the account (problem body)"},
        422: {"description": "A single invalid event (problem body naming the fields)"},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _EVENT_SCHEMA}}}},
)
async def post_events(
    request: Request, caller: CallerDep, runtime: RuntimeDep, service: IngestServiceDep, settings: SettingsDep
) -> Response:
    """Accept one CloudEvent (an object) or a batch (an array). Re-sending an event id is harmless."""
    body = await read_json(request)
    single = isinstance(body, dict)
    items: list[Any] = [body] if single else body if isinstance(body, list) else []
    if not single and not isinstance(body, list):
        raise Problem(
            422, "Unprocessable Content", "body must be a CloudEvent object or an array of them", type="validation"
        )
    if len(items) > settings.max_batch:
        raise Problem(413, "Content Too Large", f"a batch holds at most {settings.max_batch} events")
    if not items:
        raise Problem(422, "Unprocessable Content", "the batch is empty", type="validation")
    async with runtime.sessionmaker() as session, session.begin():
        results = await service.accept(session, items, allowed_source=caller.source)
    runtime.relay.wake()
    if single:
        return _single(results[0], request.url.path)
    return Response(orjson.dumps(_batch(results)), status_code=200, media_type="application/json")


def _single(result: ItemResult, path: str) -> JSONResponse:
    if result.status == "rejected":
        fields = ", ".join(dict.fromkeys(e["field"] for e in result.errors))
        return problem_response(
            422,
            "Unprocessable Content",
            f"invalid field(s): {fields}",
            type="validation",
            instance=path,
            errors=result.errors,
        )
    if result.status == "forbidden":
        return problem_response(
            403, "Forbidden", result.errors[0]["message"], type="forbidden", instance=path, errors=result.errors
        )
    if result.status == "conflict":
        return problem_response(
            409,
            "Conflict",
            result.errors[0]["message"],
            type="id-conflict" if result.errors[0]["field"] == "id" else "invoice-number-conflict",
            instance=path,
            errors=result.errors,
        )
    assert result.id is not None
    return JSONResponse(
        {"id": result.id, "status": result.status}, status_code=202 if result.status == "accepted" else 200
    )


def _batch(results: list[ItemResult]) -> dict[str, Any]:
    """The batch answer (shaped as :class:`BatchOut`), built as plain data: it is on the hot path."""
    count = dict.fromkeys(("accepted", "duplicate", "conflict", "rejected", "forbidden"), 0)
    for r in results:
        count[r.status] += 1
    return {
        "accepted": count["accepted"],
        "duplicates": count["duplicate"],
        "conflicts": count["conflict"],
        "rejected": count["rejected"],
        "forbidden": count["forbidden"],
        "items": [{"index": r.index, "id": r.id, "status": r.status, "errors": r.errors} for r in results],
    }
