"""``POST /v1/topics/{topic}/events``: the hot path, as bare ASGI.

:class:`PublishEndpoint` skips Starlette's Request and Response objects (a third
of the cost of a one-event publish). :class:`HubApp` goes further: it takes a
publish before Starlette's own layers and router, and runs it under the app's
middleware (the guard and body budget, :mod:`.guard`, :mod:`.budget`, and any
other given to the app), answering errors with the same problem handlers
(:mod:`.problems`). The layers it skips (error and exception middleware, the
router, the route, the method dispatch) each wrapped the request or its
``send``, and together cost more than the publish itself. Anything else, and a
publish under a ``root_path``, goes through the stack as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.core.positions import is_decimal
from tidings.core.published import Published, Run, Spread
from tidings.errors import BadRequest, StorageUnavailable, TidingsError, TooLarge
from tidings.events import http as ce
from tidings.server.hubid import HubIdHeader
from tidings.server.problems import tidings_error, unexpected_error

if TYPE_CHECKING:
    from tidings.server.app import Api

_PREFIX: Final = "/v1/topics/"
_SUFFIX: Final = "/events"
# Bodies whose media type alone picks the mode: their other headers are never read.
_JSON_MODES: Final = frozenset({ce.STRUCTURED, ce.BATCH})
_NO_HEADERS: Final[dict[str, str]] = {}
_HEADERS_202: Final = (b"content-type", b"application/json")


class PublishEndpoint:
    """``POST /v1/topics/{topic}/events`` as a bare ASGI app.

    Errors propagate to whatever runs it: the app's problem handlers in the
    stack, or :class:`HubApp`'s, which are the same.
    """

    def __init__(self, api: Api) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_202(send, await self.answer(scope, receive))

    async def answer(self, scope: Scope, receive: Receive) -> bytes:
        """Publish the request's events; the 202 body."""
        api = self.api
        name = scope["path_params"]["topic"]
        # One pass for the three fields a JSON body needs (the last of each, as a
        # dict of all of them would keep); all of them only for binary mode.
        content_type = length = authorization = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"content-length":
                length = value
            elif key == b"authorization":
                authorization = value
        if api.auth.enabled:
            api.auth.check(
                None if authorization is None else authorization.decode("latin-1"),
                "publish",
                name,
            )
        if api.hub.closing:
            raise StorageUnavailable("the hub is shutting down")
        ctype = None if content_type is None else content_type.decode("latin-1")
        body = await read_body(
            receive,
            None if length is None else length.decode("latin-1"),
            api.options.max_request_bytes,
        )
        headers = (
            _NO_HEADERS
            if ctype in _JSON_MODES
            else {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        )
        events, new_ids = ce.parse_request(
            ctype,
            headers,
            body,
            topic=name,
            max_event_bytes=None,  # the hub measures each event as it stores it
        )
        # Handed over, not kept: the hub frees the events once it has serialized them.
        publishing = api.hub.publish_batch(name, events, new_ids=new_ids)
        del events, body
        result = await publishing
        if isinstance(result, Run):
            return _run_answer(result) or _answer(result.published())
        if isinstance(result, Spread):
            return _spread_answer(result) or _answer(result.published())
        if len(result) == 1 and not result[0][3]:
            return _one_answer(result[0])
        return _answer(result)


class HubApp(Starlette):
    """The hub's Starlette app, taking a publish before its own layers and router.

    A publish runs under the app's middleware, as in the stack (each made again,
    with the same arguments, around the publish), and its errors are answered by
    the handlers the stack would call: a :class:`TidingsError` as its problem,
    anything else as a 500 problem, then raised on to the server (as Starlette's
    ``ServerErrorMiddleware`` does).
    """

    publish: PublishEndpoint | None = None
    hub_id: str | None = None  # on every answer, outermost (Tidings-Hub-Id)
    _publish_app: ASGIApp | None = None

    def build_middleware_stack(self) -> ASGIApp:
        # Outside Starlette's ServerErrorMiddleware too: a 500 names the hub as well.
        app = super().build_middleware_stack()
        return app if self.hub_id is None else HubIdHeader(app, self.hub_id)

    def take_publish(self, endpoint: PublishEndpoint) -> None:
        """Serve ``endpoint`` ahead of the stack, under the app's middleware."""
        self.publish = endpoint

    def _publish_under_middleware(self) -> ASGIApp:
        # Made at the first publish, as Starlette makes its stack at the first
        # request: middleware added to the app until then is in both.
        app: ASGIApp = self._answer
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        if self.hub_id is not None:
            app = HubIdHeader(app, self.hub_id)
        self._publish_app = app
        return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.publish is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            topic = publish_topic(scope["path"])
            if topic is not None:
                scope["app"] = self
                scope["path_params"] = {"topic": topic}
                app = self._publish_app or self._publish_under_middleware()
                await app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.publish is not None  # take_publish set both
        try:
            answer = await self.publish.answer(scope, receive)
        except TidingsError as exc:
            response = await tidings_error(Request(scope, receive), exc)
            await response(scope, receive, send)
            return
        except Exception as exc:
            response = await unexpected_error(Request(scope, receive), exc)
            await response(scope, receive, send)
            raise
        await _send_202(send, answer)


def publish_topic(path: str) -> str | None:
    """The topic of a publish path, as the route ``/v1/topics/{topic}/events`` reads it."""
    if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
        topic = path[len(_PREFIX) : -len(_SUFFIX)]
        if topic and "/" not in topic:
            return topic
    return None


async def _send_202(send: Send, answer: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 202,
            "headers": [_HEADERS_202, (b"content-length", b"%d" % len(answer))],
        }
    )
    await send({"type": "http.response.body", "body": answer})


def _answer(results: list[Published]) -> bytes:
    """``{"events": [{"id", "partition", "offset"(, "duplicate")}, ...]}``."""
    return orjson.dumps(
        {
            "events": [
                {"id": r[0], "partition": r[1], "offset": r[2]} if not r[3] else r.to_dict()
                for r in results
            ]
        }
    )


def _one_answer(r: Published) -> bytes:
    """:func:`_answer` for one event stored now, formatted in C."""
    return b'{"events":[{"id":%s,"partition":%d,"offset":%d}]}' % (orjson.dumps(r[0]), r[1], r[2])


def _run_answer(run: Run) -> bytes | None:
    """:func:`_answer` for a run, spliced from a few byte strings made in C.

    None when an id needs escaping in JSON, so its quoted form cannot be cut out
    of the array of ids by splitting on ``","``.
    """
    ids = orjson.dumps(run.ids)
    if b"\\" in ids:
        return None
    n = len(run.ids)
    parts = [b'","partition":%d,"offset":' % run.partition] * (4 * n)
    parts[0::4] = ids[2:-2].split(b'","')  # with no escapes, '"' only delimits
    parts[2::4] = orjson.dumps(list(range(run.base, run.base + n)))[1:-1].split(b",")
    parts[3::4] = [b'},{"id":"'] * n
    parts[-1] = b"}]}"
    return b'{"events":[{"id":"' + b"".join(parts)


def _spread_answer(spread: Spread) -> bytes | None:
    """:func:`_answer` for a :class:`Spread`, spliced as :func:`_run_answer` does (None
    when an id needs escaping)."""
    ids = orjson.dumps(spread.ids)
    if b"\\" in ids:
        return None
    n = len(spread.ids)
    parts = [b'},{"id":"'] * (3 * n)
    parts[0::3] = ids[2:-2].split(b'","')
    where = zip(spread.partitions, spread.offsets, strict=True)
    parts[1::3] = map(b'","partition":%d,"offset":%d'.__mod__, where)
    parts[-1] = b"}]}"
    return b'{"events":[{"id":"' + b"".join(parts)


async def read_body(receive: Receive, length: str | None, limit: int) -> bytes:
    """A request's whole body, refused past ``limit`` bytes (before reading, if it says)."""
    if length is not None and is_decimal(length) and int(length) > limit:
        raise TooLarge(f"request body of {length} bytes is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


__all__ = ["HubApp", "PublishEndpoint", "publish_topic", "read_body"]
