"""Which node dispatches each webhook endpoint, and calls forwarded to it (the
``EndpointOwners`` seam of ``tidings.core.webhooks.store``).

Each endpoint has a lease (``leases``) in the bucket ``td_webhook_owners``, keyed by
the endpoint id: the node holding it dispatches the endpoint and serves its consumer
groups; the others leave it alone. Each node answers requests on a subject of its own
(``td.wh.node.<node id>``, the ``reply`` of the leases it holds): another node forwards
there a webhook call on an endpoint this node holds (a change, a replay, a look at
its lag), as JSON, and gets back the answer or the error, raised again as the same
class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from tidings.backends.nats.leases import DEFAULT_LEASE_S, Leases
from tidings.backends.nats.webhooks import NatsWebhookStore
from tidings.errors import StorageUnavailable, TidingsError

logger = logging.getLogger("tidings.webhooks")

OWNERS_BUCKET = "td_webhook_owners"
CLOSE_TIMEOUT_S = 5.0  # for releasing the leases at a clean stop
FORWARD_TIMEOUT_S = 30.0  # a forwarded test POST may take the webhook timeout (15 s)


class NatsEndpointOwners:
    """The leases of one node on the endpoints of a :class:`NatsWebhookStore`."""

    def __init__(
        self,
        store: NatsWebhookStore,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        node: str | None = None,
        forward_timeout_s: float = FORWARD_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.lease_s = lease_s
        self.node = node or uuid.uuid4().hex
        self.subject = f"td.wh.node.{self.node}"
        self.forward_timeout_s = forward_timeout_s
        self.leases: Leases | None = None
        self._serve: Callable[[str, str, dict[str, Any]], Awaitable[Any]] | None = None
        self._sub: Subscription | None = None
        self._answering: set[asyncio.Task[None]] = set()

    async def start(
        self,
        serve: Callable[[str, str, dict[str, Any]], Awaitable[Any]],
        lost: Callable[[str], None],
    ) -> None:
        await self.store.start()
        bucket = await self.store.storage.log.bucket(OWNERS_BUCKET)
        self._serve = serve
        self.leases = Leases(bucket, self.node, self.subject, lease_s=self.lease_s, on_lost=lost)
        self._sub = await self.store.conn.client.subscribe(self.subject, cb=self._on_request)
        self.leases.start()

    def changes(self) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
        return self.store.changes()

    def _leases(self) -> Leases:
        if self.leases is None:
            raise StorageUnavailable("webhook ownership is not started")
        return self.leases

    async def claim(self, endpoint: str) -> bool:
        leases = self._leases()
        holder = await leases.claim(endpoint)
        return holder is not None and holder == leases.me

    def holds(self, endpoint: str) -> bool:
        return self.leases is not None and self.leases.holds(endpoint)

    async def release(self, endpoint: str) -> None:
        await self._leases().release(endpoint)

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        for task in list(self._answering):
            task.cancel()
        await asyncio.gather(*self._answering, return_exceptions=True)
        if self.leases is not None:
            # bounded: with the cluster unreachable, the leases run out by themselves
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.leases.close(release=True), CLOSE_TIMEOUT_S)

    # -- forwarding ----------------------------------------------------------------------

    async def forward(self, endpoint: str, op: str, body: dict[str, Any]) -> tuple[bool, Any]:
        leases = self._leases()
        holder = await leases.holder(endpoint)
        if holder is None or holder == leases.me:
            return False, None
        request = orjson.dumps({"op": op, "endpoint": endpoint, "body": body})
        try:
            msg = await self.store.conn.client.request(
                holder.reply, request, timeout=self.forward_timeout_s
            )
        except (NoRespondersError, NatsTimeout, NatsError) as exc:
            raise StorageUnavailable(
                f"the node dispatching webhook {endpoint!r} did not answer ({type(exc).__name__}); "
                "another node takes the webhook over once its lease runs out: try again"
            ) from None
        answer = orjson.loads(msg.data)
        if "error" in answer:
            raise _error(answer["error"])
        return True, answer.get("ok")

    async def _on_request(self, msg: Msg) -> None:
        # Each call in a task of its own: a slow one (a test POST) does not hold the others.
        task = asyncio.get_running_loop().create_task(self._answer(msg))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, msg: Msg) -> None:
        try:
            call = orjson.loads(msg.data)
            assert self._serve is not None
            out: dict[str, Any] = {
                "ok": await self._serve(call["op"], call["endpoint"], call.get("body") or {})
            }
        except TidingsError as exc:
            out = {"error": {"class": type(exc).__name__, "detail": exc.detail,
                             "fields": exc.fields}}  # fmt: skip
        except Exception as exc:
            logger.exception("a forwarded webhook call failed")
            out = {"error": {"class": "TidingsError", "detail": str(exc), "fields": {}}}
        with contextlib.suppress(Exception):  # the caller gave up: nothing to answer
            await msg.respond(orjson.dumps(out))


def _error(raw: dict[str, Any]) -> TidingsError:
    """The error a forwarded call raised on the other node, as the same class here."""
    name = str(raw.get("class"))
    cls: type[TidingsError] = TidingsError
    todo = [TidingsError]
    while todo:
        c = todo.pop()
        if c.__name__ == name:
            cls = c
            break
        todo.extend(c.__subclasses__())
    detail, fields = str(raw.get("detail", "")), dict(raw.get("fields") or {})
    try:
        return cls(detail, **fields)
    except TypeError:  # a class made otherwise: its detail, as a plain error
        return TidingsError(detail, **fields)


__all__ = ["NatsEndpointOwners"]
