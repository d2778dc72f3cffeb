"""Consumer groups served by every node on NATS: one owner per group, the others
forward to it (the :class:`~tidings.core.grouprouting.GroupRouter` of this backend).

JetStream's own consumers cannot be a group's engine: they keep no order per key
between competing consumers and their acks carry no fencing. So a group is served
as on the embedded log, by the hub's own group logic, in the memory of one node at
a time, its owner, as Kafka's group coordinator serves a group:

- **Ownership** is a lease (:mod:`leases`) on the key ``g.<topic>.<group>`` of
  ``td_owners``, naming the owner's node id and the subject it answers on
  (``_td.node.<node id>``, request/reply over NATS: nodes need not know each
  other's HTTP address).
- **Any node** takes an operation on a client's group (fetch with its long poll,
  ack, nack, seek, re-drive, create, change, delete, describe): if it holds the
  lease it serves it; if another node does, it forwards the operation there and
  answers what came back, errors as the same error classes; if nobody does, it
  takes the lease and serves it.
- **Taking over** loads the group from ``td_groups`` (configuration, positions,
  counters) and writes it again by compare-and-set (``NatsStorage.take_group``): a
  save still on its way from the node before is refused. Records leased by the
  node before are due again (at least once, as after a restart of an embedded hub).
- **A stale owner** (its lease lost, or a save refused because another node wrote
  the group) drops the group from its memory and forwards from then on.

An owner that died stops answering: its requests find no responders, and the
forwarding node looks at the lease until it has seen it unchanged for the lease
time, then takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from tidings.backends.nats import names
from tidings.backends.nats.leases import DEFAULT_LEASE_S, LEASES_BUCKET, Holder, Leases
from tidings.backends.nats.storage import GroupMoved, NatsStorage
from tidings.core.consuming import redrive_cursor
from tidings.core.grouprouting import GroupRouting, decode_answer, encode_answer, run_here
from tidings.core.groups import internal_group
from tidings.errors import GroupNotFound, NotFound, StorageUnavailable, TidingsError

logger = logging.getLogger("tidings.nats")

_RETRY_S = 0.1  # between looks at a lease whose holder does not answer
CLOSE_TIMEOUT_S = 5.0  # for releasing the leases at a clean stop


class _Moved(Exception):
    """The group is not (or no longer) served where the operation went: route again."""


class NatsGroupRouter:
    """Routes each client group's operations to the node that holds its lease."""

    def __init__(
        self,
        storage: NatsStorage,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        node: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage
        self.lease_s = lease_s
        self.clock = clock  # the leases' (a seam for tests)
        self.node = node or uuid.uuid4().hex[:16]
        self.subject = f"_td.node.{self.node}"
        self._hub: GroupRouting | None = None
        self._leases: Leases | None = None
        self._owners: dict[str, Holder] = {}  # lease key -> holder last seen (forwarding)
        self._served: dict[str, tuple[str, str]] = {}  # lease key -> (topic, group) here
        self._taking: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Any = None
        self.closing = False

    @property
    def hub(self) -> GroupRouting:
        if self._hub is None:
            raise StorageUnavailable("the group router is not started")
        return self._hub

    @property
    def leases(self) -> Leases:
        if self._leases is None:
            raise StorageUnavailable("the group router is not started")
        return self._leases

    async def start(self, hub: GroupRouting) -> None:
        await self.storage.start()
        self._hub = hub
        bucket = await self.storage.log.bucket(LEASES_BUCKET)
        self._leases = Leases(
            bucket, self.node, self.subject, lease_s=self.lease_s, clock=self.clock,
            on_lost=self._lost,
        )  # fmt: skip
        self.storage.on_group_moved = self._moved
        self.storage.on_topic_gone = self._topic_gone
        client = self.storage.log.conn.client
        self._sub = await client.subscribe(self.subject, cb=self._on_request)
        self._leases.start()

    async def close(self) -> None:
        """Stop answering, and release every lease: another node takes the groups at once."""
        self.closing = True
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        if self._leases is not None:
            # bounded: with the cluster unreachable, the leases run out by themselves
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._leases.close(release=True), CLOSE_TIMEOUT_S)
        for key in list(self._served):
            self._drop(key)

    # -- any node ----------------------------------------------------------------------

    async def call(self, op: str, topic: str, group: str, args: dict[str, Any]) -> Any:
        """Run ``op`` where the group is served: here, at its owner, or here once taken."""
        key = _lease_key(topic, group)
        wait = float(args.get("wait", 0.0)) if op == "fetch" else 0.0
        # the lease time twice: a dead owner's lease runs out within it, seen from here
        deadline = time.monotonic() + 2 * self.lease_s + 5.0 + wait
        leases = self.leases
        while True:
            if self.closing:
                raise StorageUnavailable("the hub is shutting down")
            holder = self._owners.get(key)
            if holder is None or leases.holds(key):
                holder = await leases.claim(key)
            try:
                if holder == leases.me:
                    return await self._here(op, topic, group, args, key)
                if holder is not None:
                    self._owners[key] = holder
                    return await self._forward(holder, op, topic, group, args)
            except _Moved:
                self._owners.pop(key, None)
            if time.monotonic() >= deadline:
                raise StorageUnavailable(
                    f"group {group!r} of {topic!r}: no node served it within "
                    f"{2 * self.lease_s + 5.0:.0f} s",
                    topic=topic,
                    group=group,
                )
            await asyncio.sleep(_RETRY_S)

    async def list_groups(self) -> list[dict[str, Any]]:
        """Every client group in ``td_groups``, each described by the node serving it;
        one that no node serves, from its saved state (its lease not taken)."""
        entries, _ = await self.storage.groups.items()
        found = []
        for k in entries:
            t, _, g = k.partition(".")
            topic, group = names.decode(t), names.decode(g)
            if internal_group(group) is None:
                found.append((topic, group))

        async def describe(topic: str, group: str) -> dict[str, Any] | None:
            with contextlib.suppress(NotFound):
                if await self.leases.holder(_lease_key(topic, group)) is None:
                    await self.hub.learn_topic(topic)
                    row = await self.storage.read_group(topic, group)
                    if row is None or topic not in self.hub.topics:
                        return None  # deleted meanwhile
                    return self.hub.saved_group_info(*row)
                info: dict[str, Any] = await self.call("info", topic, group, {})
                return info
            return None  # deleted meanwhile

        got = await asyncio.gather(*(describe(t, g) for t, g in found))
        return [g for g in got if g is not None]

    # -- the owner ---------------------------------------------------------------------

    async def _here(self, op: str, topic: str, group: str, args: dict[str, Any], key: str) -> Any:
        hub = self.hub
        if key not in self._served or not hub.serves(topic, group):
            await self._take(op, topic, group, key)
        try:
            answer = await run_here(hub, op, topic, group, args)
        except GroupMoved:
            self._drop(key)
            raise _Moved from None
        except GroupNotFound:
            if key not in self._served or not self.leases.holds(key):
                raise _Moved from None  # dropped while it ran
            raise
        except BaseException:
            if op == "put" and key in self._served and not hub.serves(topic, group):
                # a creation refused (no such topic, a bad name...): no group to serve
                await self._give_up(key)
            raise
        if op == "delete":
            await self._give_up(key)
        return answer

    async def _take(self, op: str, topic: str, group: str, key: str) -> None:
        """Serve the group here from its saved state (this node holds its lease)."""
        hub = self.hub
        async with self._taking.setdefault(key, asyncio.Lock()):
            if key in self._served and hub.serves(topic, group):
                return
            try:
                await hub.learn_topic(topic)
                row = await self.storage.take_group(topic, group)
                if not self.leases.holds(key):
                    raise _Moved
                if row is None:
                    hub.drop_group_here(topic, group)
                    if op != "put":
                        hub.group(topic, group)  # TopicNotFound or GroupNotFound
                else:
                    hub.drop_group_here(topic, group)
                    await hub.adopt_group(*row)
                    await self._reload_redrive_cursor(topic, group, row[2])
            except BaseException:
                self.storage.let_go_group(topic, group)
                await self.leases.release(key)
                raise
            self._served[key] = (topic, group)
            logger.info("serving group %s of %s (node %s)", group, topic, self.node)

    async def _reload_redrive_cursor(self, topic: str, group: str, config: dict[str, Any]) -> None:
        """The group's re-drive cursor as the node before left it."""
        target = config.get("dead_letter_topic") or f"{topic}.dlq"
        await self.hub.learn_topic(target)
        if target not in self.hub.topics:
            return
        cursor = redrive_cursor(topic, group, target)
        row = await self.storage.read_group(target, cursor)
        if row is not None:
            self.hub.drop_group_here(target, cursor)
            await self.hub.adopt_group(*row)

    def _drop(self, key: str) -> None:
        served = self._served.pop(key, None)
        if served is not None:
            self.storage.let_go_group(*served)
            if self._hub is not None:
                self._hub.drop_group_here(*served)
            logger.info("group %s of %s no longer served here", served[1], served[0])

    async def _give_up(self, key: str) -> None:
        """Serve the group no longer, and release its lease."""
        self._drop(key)
        lock = self._taking.get(key)
        if lock is not None and not lock.locked():
            del self._taking[key]
        await self.leases.release(key)

    async def _topic_gone(self, topic: str) -> None:
        """The topic was dropped (here or by another node): its groups are gone too."""
        for key in [k for k, served in self._served.items() if served[0] == topic]:
            await self._give_up(key)

    def _lost(self, key: str) -> None:
        self._drop(key)

    def _moved(self, topic: str, group: str) -> None:
        key = _lease_key(topic, group)
        if key in self._served:
            self._drop(key)
            # another node wrote the group: give the lease up (now: the operation that
            # met this is routed again at once) rather than take the group back
            revision = None if self._leases is None else self._leases.forget(key)
            if revision is not None:
                task = asyncio.get_running_loop().create_task(self._delete(key, revision))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _delete(self, key: str, revision: int) -> None:
        with contextlib.suppress(TidingsError):  # taken meanwhile: nothing to give up
            await self.leases.bucket.delete(key, revision)

    # -- requests between nodes --------------------------------------------------------

    async def _forward(
        self, holder: Holder, op: str, topic: str, group: str, args: dict[str, Any]
    ) -> Any:
        settings = self.storage.settings
        wait = float(args.get("wait", 0.0)) if op == "fetch" else 0.0
        timeout = max(2 * settings.request_timeout_s, 5.0) + wait
        body = orjson.dumps({"op": op, "topic": topic, "group": group, "args": args})
        try:
            msg = await self.storage.log.conn.client.request(holder.reply, body, timeout=timeout)
        except (NoRespondersError, NatsTimeout, TimeoutError):
            raise _Moved from None  # gone, or not answering: look at the lease again
        except NatsError as exc:
            logger.warning("forward to node %s failed: %s", holder.node, exc)
            raise _Moved from None
        resp = orjson.loads(msg.data)
        if "moved" in resp:
            raise _Moved
        if "error" in resp:
            raise _error(resp["error"])
        answer = decode_answer(op, resp["ok"])
        if op == "fetch" and any(not d.payload for d in answer[0]):
            answer = (await self._fill(topic, answer[0]), answer[1])
        return answer

    async def _fill(self, topic: str, deliveries: list[Any]) -> list[Any]:
        """Payloads the owner left out (its answer would pass the server's limit): read
        here from the log, shared by every node."""
        await self.hub.learn_topic(topic)
        t = self.hub.topic(topic)
        out = []
        for d in deliveries:
            if not d.payload:
                got = await t.partitions[d.partition].read(d.offset, 1)
                if not got or got[0][0] != d.offset:
                    raise StorageUnavailable(f"record {d.partition}/{d.offset} of {topic!r}")
                d = type(d)(d.partition, d.offset, got[0][2], d.lease, d.deliveries)
            out.append(d)
        return out

    async def _on_request(self, msg: Msg) -> None:
        # nats-py runs one callback at a time per subscription: serve in a task
        task = asyncio.get_running_loop().create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        try:
            req = orjson.loads(msg.data)
            op, topic, group, args = req["op"], req["topic"], req["group"], req["args"]
            key = _lease_key(topic, group)
            if self.closing or not self.leases.holds(key):
                raise _Moved
            answer = await self._here(op, topic, group, args, key)
            data = orjson.dumps({"ok": encode_answer(op, answer)})
            if len(data) > self.storage.log.conn.max_payload - 1024 and op == "fetch":
                # too large for one message: the payloads are read by the forwarding node
                deliveries, skipped = answer
                stripped = [type(d)(d.partition, d.offset, b"", d.lease, d.deliveries)
                            for d in deliveries]  # fmt: skip
                data = orjson.dumps({"ok": encode_answer(op, (stripped, skipped))})
        except _Moved:
            data = b'{"moved":true}'
        except TidingsError as exc:
            data = orjson.dumps(
                {"error": {"class": type(exc).__name__, "detail": exc.detail, "fields": exc.fields}}
            )
        except Exception as exc:  # answered, so the forwarding node does not wait it out
            logger.exception("group request failed")
            data = orjson.dumps(
                {"error": {"class": "StorageError", "detail": str(exc), "fields": {}}}
            )
        with contextlib.suppress(Exception):
            await msg.respond(data)


def _lease_key(topic: str, group: str) -> str:
    return f"g.{names.key(topic)}.{names.key(group)}"


def _error_classes() -> dict[str, type[TidingsError]]:
    out: dict[str, type[TidingsError]] = {}
    todo: list[type[TidingsError]] = [TidingsError]
    while todo:
        cls = todo.pop()
        out[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return out


def _error(raw: dict[str, Any]) -> TidingsError:
    """The error the owner raised, as the same class (TidingsError if unknown here)."""
    cls = _error_classes().get(str(raw.get("class")), TidingsError)
    detail, fields = str(raw.get("detail", "")), dict(raw.get("fields") or {})
    try:
        return cls(detail, **fields)
    except TypeError:  # a class whose constructor takes other arguments
        exc = cls.__new__(cls)
        TidingsError.__init__(exc, detail, **fields)
        return exc
