"""``/v1/events``: a record by its event id, an order's records by correlationid.

Both go through the hub's event index (:mod:`tidings.core.eventindex`), across
every topic. A token sees only records of topics it may subscribe to: the others
are passed over as if they were not there, so an answer never tells of a topic
the token cannot read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core.eventindex import MAX_LIMIT, Found, parse_cursor
from tidings.core.positions import is_decimal
from tidings.errors import BadRequest, NotFound

if TYPE_CHECKING:
    from tidings.server.app import Api

MAX_KEY_CHARS = 1000  # an id or correlationid longer than this is refused (400)


def _record(found: Found) -> bytes:
    """A record as every read answers it, the stored event spliced in unparsed."""
    return (
        b'{"topic":'
        + orjson.dumps(found.topic)
        + b',"partition":%d,"offset":%d,"event":' % (found.partition, found.offset)
        + found.payload
        + b"}"
    )


def _key(value: str | None, field: str) -> str:
    if not value:
        raise BadRequest(f"{field} must be a non-empty string", field=field)
    if len(value) > MAX_KEY_CHARS:
        raise BadRequest(f"{field} is longer than {MAX_KEY_CHARS} characters", field=field)
    return value


class LookupRoutes:
    """``GET /v1/events/{id}`` and ``GET /v1/events?correlationid=``."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def routes(self) -> list[Route]:
        return [
            Route("/v1/events", self.by_correlation, methods=["GET"]),
            Route("/v1/events/{event_id}", self.by_id, methods=["GET"]),
        ]

    def _visible(self, request: Request) -> Callable[[str], bool] | None:
        """Which topics' records this request may see; None: all (an open hub)."""
        auth = self.api.auth
        if not auth.enabled:
            return None
        token = auth.token(request.headers.get("authorization"))
        return lambda topic: token.allows("subscribe", topic)

    async def by_id(self, request: Request) -> Response:
        visible = self._visible(request)
        unknown = sorted(set(request.query_params.keys()))
        if unknown:
            raise BadRequest(f"unknown parameter {unknown[0]!r}", field=unknown[0])
        event_id = _key(request.path_params["event_id"], "event_id")
        found = await self.api.hub.index.find_id(event_id, visible)
        if found is None:
            raise NotFound(f"no event with id {event_id!r}", id=event_id)
        return Response(_record(found), media_type="application/json")

    async def by_correlation(self, request: Request) -> Response:
        visible = self._visible(request)
        q = request.query_params
        unknown = sorted(set(q.keys()) - {"correlationid", "limit", "after"})
        if unknown:
            raise BadRequest(f"unknown parameter {unknown[0]!r}", field=unknown[0])
        correlation_id = _key(q.get("correlationid"), "correlationid")
        raw_limit = q.get("limit", "100")
        if not is_decimal(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
        after = parse_cursor(q.get("after"))
        page = await self.api.hub.index.find_correlated(
            correlation_id, after, int(raw_limit), visible
        )
        body = (
            b'{"records":['
            + b",".join(_record(f) for f in page.records)
            + b'],"next":'
            + orjson.dumps(page.next)
            + b"}"
        )
        return Response(body, media_type="application/json")
