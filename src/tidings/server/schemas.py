"""``/v1/schemas``: the schema registry over HTTP (see :mod:`tidings.core.schemas`).

Reading needs any valid token (a producer reads what it must send), and shows what
the hub learnt from traffic (topics, sources, groups, types seen, the refused data
of the last failure) only for topics the token may subscribe to; changing a
type's schemas (a version, its config, a consumer's reading schema) needs admin
or the token's ``schemas`` scope on the type; the inferred schema samples event
data, so it needs the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.core.patterns import TypeFilter
from tidings.core.positions import is_decimal
from tidings.core.schemas.infer import Sample, infer_schema, sample_type
from tidings.core.schemas.registry import TypeSchemas, check_app_name, check_type_name
from tidings.errors import BadRequest, NotFound

if TYPE_CHECKING:
    from tidings.server.app import Api


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _only(body: dict[str, Any], allowed: set[str], required: frozenset[str] = frozenset()) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r}; expected one of {sorted(allowed)}", field=unknown[0]
        )
    for name in sorted(required - set(body)):
        raise BadRequest(f"{name!r} is required", field=name)


class SchemaRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.hub = api.hub
        self.registry = api.hub.schemas

    def _reader(self, request: Request) -> Callable[[str], bool] | None:
        """Check the token; which topics' traffic it may see (None: all, admin or open).

        What the registry learnt from traffic (topics, sources, groups, types seen,
        the data of a refused event) is shown only for topics the token may subscribe
        to, as the event lookups and ``/v1/groups`` do.
        """
        auth = self.api.auth
        if not auth.enabled:
            return None
        token = auth.token(request.headers.get("authorization"))
        if token.admin:
            return None
        return lambda topic: token.allows("subscribe", topic)

    def _writer(self, request: Request, etype: str) -> None:
        check_type_name(etype)
        self.api._authorize(request, "schemas", etype)

    def _type(self, request: Request) -> str:
        return check_type_name(request.path_params["type"])

    # -- reads ---------------------------------------------------------------------------

    async def list_all(self, request: Request) -> Response:
        visible = self._reader(request)
        registered = [ts.summary() for _, ts in sorted(self.registry.types.items())]
        seen: set[str] = set()
        for name, topic in list(self.hub.topics.items()):
            if visible is None or visible(name):
                seen.update(await self.hub.catalog.types(name, topic.partitions))
        unregistered = sorted(
            t for t in seen if t not in self.registry.types or not self.registry.types[t].versions
        )
        return _json({"schemas": registered, "unregistered": unregistered})

    async def get(self, request: Request) -> Response:
        etype = self._type(request)
        visible = self._reader(request)
        ts = self.registry.get(etype)
        carriers = await self._carriers(ts.name, visible)
        sample = await sample_type(ts.name, carriers)
        return _json(self._describe(ts, sample, visible is None))

    def _describe(self, ts: TypeSchemas, sample: Sample, sees_all: bool) -> dict[str, Any]:
        producers = [
            {"name": name, "via": "app", "version": v} for name, v in sorted(ts.producers.items())
        ] + [
            {"name": src, "via": "traffic", "events": n}
            for src, n in sorted(sample.sources.items())
        ]
        consumers = [{"name": name, "via": "app"} for name in sorted(ts.consumers)]
        for topic_name in sample.topics:
            topic = self.hub.topics.get(topic_name)
            for name, group in sorted(topic.groups.items()) if topic else ():
                types = group.config.types
                if not types or TypeFilter(types).matches(ts.name):
                    consumers.append({"name": name, "via": "group", "topic": topic_name})
        return {
            "type": ts.name,
            "compatibility": ts.compatibility,
            "latest": ts.latest.number if ts.latest else None,
            "versions": [{"version": v.number, "uri": v.uri} for v in ts.versions],
            "producers": producers,
            "consumers": consumers,
            "topics": sample.topics,
            # The last refusal quotes the refused data: for a token that sees every topic.
            "failures": {"count": ts.failures, "last": ts.last_failure if sees_all else None},
        }

    async def _carriers(
        self, etype: str, visible: Callable[[str], bool] | None
    ) -> list[tuple[str, Any]]:
        return [
            (name, t.partitions)
            for name, t in sorted(self.hub.topics.items())
            if (visible is None or visible(name))
            and etype in await self.hub.catalog.types(name, t.partitions)
        ]

    async def version(self, request: Request) -> Response:
        etype = self._type(request)
        self._reader(request)
        raw = request.path_params["version"]
        if raw == "latest":
            ts = self.registry.get(etype)
            number = len(ts.versions)
        elif is_decimal(raw) and len(raw) < 10:
            number = int(raw)
        else:
            raise BadRequest("version must be a positive integer or 'latest'", field="version")
        v = self.registry.version(etype, number)
        return _json({"type": etype, "version": v.number, "uri": v.uri, "schema": v.schema})

    async def inferred(self, request: Request) -> Response:
        etype = self._type(request)
        self._writer(request, etype)
        visible = self._reader(request)
        sample = await sample_type(etype, await self._carriers(etype, visible))
        if not sample.events:
            raise NotFound(f"no recent event of type {etype!r} to infer a schema from", type=etype)
        return _json(
            {
                "type": etype,
                "events": len(sample.data),
                "topics": sample.topics,
                "sources": sorted(sample.sources),
                "registered": bool(
                    etype in self.registry.types and self.registry.types[etype].versions
                ),
                "schema": infer_schema(sample.data),
            }
        )

    # -- changes -------------------------------------------------------------------------

    async def put(self, request: Request) -> Response:
        etype = self._type(request)
        self._writer(request, etype)
        body = await self.api._json_body(request, allow_empty=False)
        _only(body, {"schema", "producer"}, frozenset({"schema"}))
        version, created = await self.registry.put(etype, body["schema"], body.get("producer"))
        return _json(
            {"type": etype, "version": version.number, "uri": version.uri, "created": created},
            201 if created else 200,
        )

    async def check(self, request: Request) -> Response:
        etype = self._type(request)
        self._reader(request)
        body = await self.api._json_body(request, allow_empty=False)
        _only(body, {"schema", "producer"}, frozenset({"schema"}))
        producer = body.get("producer")
        if producer is not None:
            check_app_name(producer, "producer")
        return _json(self.registry.check(etype, body["schema"], producer))

    async def config(self, request: Request) -> Response:
        etype = self._type(request)
        self._writer(request, etype)
        body = await self.api._json_body(request, allow_empty=False)
        _only(body, {"compatibility"}, frozenset({"compatibility"}))
        ts = await self.registry.configure(etype, body["compatibility"])
        return _json({"type": etype, "compatibility": ts.compatibility})

    async def consumer(self, request: Request) -> Response:
        etype = self._type(request)
        self._writer(request, etype)
        name = check_app_name(request.path_params["name"], "consumer")
        body = await self.api._json_body(request, allow_empty=False)
        _only(body, {"schema"}, frozenset({"schema"}))
        await self.registry.put_consumer(etype, name, body["schema"])
        return _json({"type": etype, "consumer": name})

    def routes(self) -> list[Route]:
        S = "/v1/schemas/{type}"
        return [
            Route("/v1/schemas", self.list_all, methods=["GET"]),
            Route(S, self.put, methods=["PUT"]),
            Route(S, self.get, methods=["GET"]),
            Route(S + "/versions/{version}", self.version, methods=["GET"]),
            Route(S + "/config", self.config, methods=["PUT"]),
            Route(S + "/check", self.check, methods=["POST"]),
            Route(S + "/consumers/{name}", self.consumer, methods=["PUT"]),
            Route(S + "/inferred", self.inferred, methods=["GET"]),
        ]
