"""HTTP pieces every service shares: RFC 9457 problem bodies, /healthz, /readyz, /metrics,
latency metrics and a request size limit."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arrears_shared.errors import ConflictError, NotFoundError, PermanentError
from arrears_shared.metrics import HTTP_LATENCY
from arrears_shared.tracing import traced

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://arrears.dev/problems/"


class Problem(Exception):
    """Raise to answer with an RFC 9457 problem body."""

    def __init__(
        self, status: int, title: str, detail: str | None = None, *, type: str | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.extra = extra


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + type if type else "about:blank",
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "(body)"


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _loc(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
        return problem_response(
            422,
            "Unprocessable Content",
            f"invalid field(s): {fields}",
            type="validation",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.title, exc.detail, type=exc.type, instance=request.url.path, **exc.extra
        )

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return problem_response(409, "Conflict", str(exc), type="conflict", instance=request.url.path)

    @app.exception_handler(PermanentError)
    async def _permanent(request: Request, exc: PermanentError) -> JSONResponse:
        return problem_response(422, "Unprocessable Content", str(exc), type="rejected", instance=request.url.path)

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return problem_response(404, "Not Found", str(exc), type="not-found", instance=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {
            400: "Bad Request",
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not Found",
            405: "Method Not Allowed",
            409: "Conflict",
            412: "Precondition Failed",
            413: "Content Too Large",
            415: "Unsupported Media Type",
            428: "Precondition Required",
        }
        return problem_response(
            exc.status_code,
            titles.get(exc.status_code, "Error"),
            str(exc.detail),
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, without reading them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await problem_response(
                    413, "Content Too Large", f"request bodies are limited to {self.max_bytes} bytes"
                )(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise Problem(413, "Content Too Large", f"request bodies are limited to {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: no trace for them


def install_operational_routes(app: FastAPI, readiness: Callable[[], Awaitable[dict[str, bool]]]) -> None:
    @app.middleware("http")
    async def _latency(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        if request.url.path in _UNTRACED:
            response = await call_next(request)
        else:
            carrier = {k: v for k, v in request.headers.items() if k in ("traceparent", "tracestate")}
            attributes = {"http.request.method": request.method, "url.path": request.url.path}
            with traced(f"HTTP {request.method}", carrier, kind=SpanKind.SERVER, attributes=attributes):
                response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        HTTP_LATENCY.labels(request.method, path, str(response.status_code)).observe(time.perf_counter() - start)
        return response

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = await readiness()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
