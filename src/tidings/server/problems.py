"""Errors as RFC 9457 problem details, translated once at the edge."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tidings.errors import ServerBusy, TidingsError

logger = logging.getLogger("tidings.server")

PROBLEM = "application/problem+json"
RETRY_AFTER_S = "1"


def problem_response(problem: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(problem), status_code=problem["status"], media_type=PROBLEM, headers=headers
    )


async def tidings_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TidingsError)
    problem = exc.to_problem()
    problem["instance"] = request.url.path
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if isinstance(exc, ServerBusy):
        headers = {"Retry-After": str(exc.retry_after_s)}
    elif exc.status == 503:
        headers = {"Retry-After": RETRY_AFTER_S}  # a full disk or a restart: soon, not now
    return problem_response(problem, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem_response(
        {
            "type": "about:blank",
            "title": exc.detail if exc.status_code != 404 else "Not found",
            "status": exc.status_code,
            "detail": f"{request.method} {request.url.path}: {exc.detail}",
            "instance": request.url.path,
        },
        dict(exc.headers) if exc.headers else None,
    )


async def unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(
        {
            "type": "about:blank",
            "title": "Internal error",
            "status": 500,
            "detail": f"{type(exc).__name__}: the hub logged the details",
            "instance": request.url.path,
        }
    )
