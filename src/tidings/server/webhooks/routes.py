"""``/v1/webhooks``: register, inspect, change and replay webhook endpoints (admin only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core.positions import is_decimal
from tidings.errors import BadRequest

if TYPE_CHECKING:
    from tidings.server.app import Api
    from tidings.server.webhooks.service import WebhookService

MAX_PAGE = 1000
MAX_ID = (1 << 63) - 1  # ids are SQLite integers


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _page(request: Request) -> tuple[int, int | None]:
    q = request.query_params
    unknown = sorted(set(q.keys()) - {"limit", "before", "status"})
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}", field=unknown[0])
    limit, before = q.get("limit", "100"), q.get("before")
    if not is_decimal(limit) or not 1 <= int(limit) <= MAX_PAGE:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}", field="limit")
    if before is not None and not (is_decimal(before) and int(before) <= MAX_ID):
        raise BadRequest("before must be an id from an earlier page's next", field="before")
    return int(limit), None if before is None else int(before)


class WebhookRoutes:
    def __init__(self, api: Api, service: WebhookService) -> None:
        self.api = api
        self.service = service

    async def _admin_body(self, request: Request) -> dict[str, Any]:
        self.api._authorize(request, "admin")
        return await self.api._json_body(request)

    def _admin(self, request: Request) -> str:
        self.api._authorize(request, "admin")
        return str(request.path_params.get("id", ""))

    async def create(self, request: Request) -> Response:
        body = await self._admin_body(request)
        return _json(await self.service.create(body), 201)

    async def list_all(self, request: Request) -> Response:
        self._admin(request)
        return _json({"webhooks": self.service.list()})

    async def get(self, request: Request) -> Response:
        return _json(await self.service.show(self._admin(request)))

    async def patch(self, request: Request) -> Response:
        body = await self._admin_body(request)
        return _json(await self.service.patch(request.path_params["id"], body))

    async def delete(self, request: Request) -> Response:
        await self.service.delete(self._admin(request))
        return Response(status_code=204)

    async def rotate(self, request: Request) -> Response:
        body = await self._admin_body(request)
        return _json(await self.service.rotate(request.path_params["id"], body))

    async def attempts(self, request: Request) -> Response:
        id = self._admin(request)
        limit, before = _page(request)
        status = request.query_params.get("status")
        return _json(await self.service.attempts(id, status, limit, before))

    async def replay(self, request: Request) -> Response:
        body = await self._admin_body(request)
        return _json(await self.service.replay(request.path_params["id"], body), 202)

    async def test(self, request: Request) -> Response:
        unknown = sorted(await self._admin_body(request))
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}; a test takes none", field=unknown[0])
        return _json(await self.service.test(request.path_params["id"]))

    async def dead_letters(self, request: Request) -> Response:
        id = self._admin(request)
        if "status" in request.query_params:
            raise BadRequest("unknown parameter 'status'", field="status")
        limit, before = _page(request)
        return _json(await self.service.dead_letters(id, limit, before))

    async def replay_dead_letters(self, request: Request) -> Response:
        body = await self._admin_body(request)
        return _json(await self.service.replay_dead_letters(request.path_params["id"], body), 202)

    def routes(self) -> list[Route]:
        W = "/v1/webhooks/{id}"
        return [
            Route("/v1/webhooks", self.create, methods=["POST"]),
            Route("/v1/webhooks", self.list_all, methods=["GET"]),
            Route(W, self.get, methods=["GET"]),
            Route(W, self.patch, methods=["PATCH"]),
            Route(W, self.delete, methods=["DELETE"]),
            Route(W + "/rotate-secret", self.rotate, methods=["POST"]),
            Route(W + "/attempts", self.attempts, methods=["GET"]),
            Route(W + "/replay", self.replay, methods=["POST"]),
            Route(W + "/test", self.test, methods=["POST"]),
            Route(W + "/dead-letters", self.dead_letters, methods=["GET"]),
            Route(W + "/dead-letters/replay", self.replay_dead_letters, methods=["POST"]),
        ]
