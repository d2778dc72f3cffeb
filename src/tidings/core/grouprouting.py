"""Consumer groups served by one node of several: the seam and what crosses it.

On a backend whose nodes share one hub (NATS), a group's leases, in-flight records
and redeliveries live in the memory of the one node that serves it (its owner);
every other node hands the group's operations to that owner. :class:`GroupRouting`
puts that seam in front of :class:`~tidings.core.consuming.GroupOps`: with no
:class:`GroupRouter` (the embedded log) each operation is the local one, called
directly (the method returns the local coroutine, no await or object added); with
one, each operation on a client's group goes to ``router.call``. The hub's own
groups (webhook cursors, re-drive cursors) stay with the node that made them.

The router runs an operation on the owner with :func:`run_here`, and carries its
arguments and answers as JSON with :func:`encode_answer` / :func:`decode_answer`.
Nothing here touches a socket; ``backends/nats/grouprouter.py`` does.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

from tidings.core.consuming import GroupOps, find_dead_letters, group_config
from tidings.core.groups import ConsumerGroup, Delivery, GroupConfig, internal_group
from tidings.core.patterns import TypeFilter
from tidings.core.skipping import Skipped
from tidings.errors import GroupNotFound
from tidings.log.config import GroupStats, Positions

# The operations a router carries, by name: fetch, ack, nack, seek, redrive, put
# (create or change), delete, info.
OPS = frozenset({"fetch", "ack", "nack", "seek", "redrive", "put", "delete", "info"})


class GroupRouter(Protocol):
    """Runs a group operation where the group is served (see :func:`run_here`)."""

    async def start(self, hub: GroupRouting) -> None: ...

    async def close(self) -> None: ...

    def call(
        self, op: str, topic: str, group: str, args: dict[str, Any]
    ) -> Coroutine[Any, Any, Any]: ...

    async def list_groups(self) -> list[dict[str, Any]]: ...


class GroupRouting(GroupOps):
    """:class:`GroupOps` behind a :class:`GroupRouter`, when the hub has one."""

    group_router: GroupRouter | None = None

    async def learn_topic(self, name: str) -> None:
        raise NotImplementedError

    def _routed(self, name: str) -> GroupRouter | None:
        router = self.group_router
        if router is None or internal_group(name) is not None:
            return None
        return router

    def fetch_reporting(
        self,
        topic_name: str,
        name: str,
        max_records: int = 10,
        wait_s: float = 0.0,
        types: TypeFilter | None = None,
    ) -> Coroutine[Any, Any, tuple[list[Delivery], list[Skipped]]]:
        router = self._routed(name) if self.group_router is not None else None
        if router is None:
            return GroupOps.fetch_reporting(self, topic_name, name, max_records, wait_s, types)
        args = {"max": max_records, "wait": wait_s, "types": types.patterns if types else None}
        return router.call("fetch", topic_name, name, args)

    def ack(self, topic_name: str, name: str, leases: Sequence[str]) -> Coroutine[Any, Any, int]:
        router = self._routed(name) if self.group_router is not None else None
        if router is None:
            return GroupOps.ack(self, topic_name, name, leases)
        return router.call("ack", topic_name, name, {"leases": leases})

    def nack(
        self,
        topic_name: str,
        name: str,
        leases: Sequence[str],
        delay_ms: int = 0,
        unsent: bool = False,
    ) -> Coroutine[Any, Any, int]:
        router = self._routed(name) if self.group_router is not None else None
        if router is None:
            return GroupOps.nack(self, topic_name, name, leases, delay_ms, unsent)
        args = {"leases": leases, "delay_ms": delay_ms, "unsent": unsent}
        return router.call("nack", topic_name, name, args)

    def seek(self, topic_name: str, name: str, to: object) -> Coroutine[Any, Any, dict[int, int]]:
        router = self._routed(name) if self.group_router is not None else None
        if router is None:
            return GroupOps.seek(self, topic_name, name, to)
        return router.call("seek", topic_name, name, {"to": to})

    def redrive(
        self, topic_name: str, name: str, max_records: int = 10_000
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        router = self._routed(name) if self.group_router is not None else None
        if router is None:
            return GroupOps.redrive(self, topic_name, name, max_records)
        return router.call("redrive", topic_name, name, {"max": max_records})

    def delete_group(self, topic_name: str, name: str) -> Coroutine[Any, Any, None]:
        router = self._routed(name) if self.group_router is not None else None
        if router is None:
            return GroupOps.delete_group(self, topic_name, name)
        return router.call("delete", topic_name, name, {})

    async def configure_group(
        self, topic_name: str, name: str, config: GroupConfig
    ) -> tuple[dict[str, Any], bool]:
        """Create or change a group: its :meth:`group_info` and whether it was made."""
        router = self._routed(name)
        if router is None:
            _, created = await self.put_group(topic_name, name, config)
            return self.group_info(topic_name, name), created
        info, created = await router.call("put", topic_name, name, {"config": config.to_dict()})
        return info, created

    async def describe_group(self, topic_name: str, name: str) -> dict[str, Any]:
        """:meth:`group_info`, from the node that serves the group."""
        router = self._routed(name)
        if router is None:
            return self.group_info(topic_name, name)
        info: dict[str, Any] = await router.call("info", topic_name, name, {})
        return info

    async def describe_groups(self) -> list[dict[str, Any]]:
        """:meth:`list_groups`, each from the node that serves it."""
        if self.group_router is None:
            return self.list_groups()
        local = [g for g in self.list_groups() if g["internal"]]
        shared = await self.group_router.list_groups()
        return sorted(local + shared, key=lambda g: (g["topic"], g["name"]))

    # -- what the owner does -------------------------------------------------------------

    async def adopt_group(
        self,
        topic_name: str,
        name: str,
        config: dict[str, Any],
        positions: Positions,
        stats: GroupStats,
    ) -> None:
        """Serve a group from its saved state (a node that took it over): records leased
        by the node that served it before are due again, as after a restart."""
        t = self.topic(topic_name)
        group = ConsumerGroup(topic_name, name, group_config(config), positions, stats)
        self._fill_positions(t, group)
        dlq = group.config.dead_letter_topic or f"{topic_name}.dlq"
        await find_dead_letters(t, group, self.topics.get(dlq))
        t.groups[name] = group
        self._wake(topic_name, name)

    def saved_group_info(
        self,
        topic_name: str,
        name: str,
        config: dict[str, Any],
        positions: Positions,
        stats: GroupStats,
    ) -> dict[str, Any]:
        """:meth:`group_info` of a group nobody serves, from its saved state, without
        serving it: nothing of it is leased (``pending`` 0)."""
        t = self.topic(topic_name)
        group = ConsumerGroup(topic_name, name, group_config(config), positions, stats)
        self._fill_positions(t, group)
        return self._group_info(topic_name, name, t, group)

    def drop_group_here(self, topic_name: str, name: str) -> None:
        """Stop serving a group here (another node serves it now): its long polls end."""
        t = self.topics.get(topic_name)
        if t is not None:
            t.groups.pop(name, None)
        self._wake(topic_name, name)

    def serves(self, topic_name: str, name: str) -> bool:
        t = self.topics.get(topic_name)
        return t is not None and name in t.groups

    def _wake(self, topic_name: str, name: str) -> None:
        ev = self._group_changed.get((topic_name, name))
        if ev is not None:
            ev.set()


async def run_here(hub: GroupOps, op: str, topic: str, group: str, args: dict[str, Any]) -> Any:
    """Run ``op`` on the group as this node serves it (the owner's side of a call)."""
    if op == "fetch":
        types = args.get("types")
        f = TypeFilter(types, limit=None) if types else None
        return await GroupOps.fetch_reporting(
            hub, topic, group, args["max"], float(args["wait"]), f
        )
    if op == "ack":
        return await GroupOps.ack(hub, topic, group, args["leases"])
    if op == "nack":
        return await GroupOps.nack(
            hub, topic, group, args["leases"], int(args["delay_ms"]), bool(args["unsent"])
        )
    if op == "seek":
        return await GroupOps.seek(hub, topic, group, args["to"])
    if op == "redrive":
        return await GroupOps.redrive(hub, topic, group, int(args["max"]))
    if op == "put":
        _, created = await GroupOps.put_group(hub, topic, group, group_config(args["config"]))
        return hub.group_info(topic, group), created
    if op == "delete":
        return await GroupOps.delete_group(hub, topic, group)
    if op == "info":
        return hub.group_info(topic, group)
    raise GroupNotFound(f"no group operation {op!r}", topic=topic, group=group)


def encode_answer(op: str, answer: Any) -> Any:
    """``op``'s answer as JSON values (see :func:`decode_answer`)."""
    if op == "fetch":
        deliveries, skipped = answer
        return {
            "records": [
                [d.partition, d.offset, d.payload.decode(), d.lease, d.deliveries]
                for d in deliveries
            ],
            "skipped": [[s.partition, s.first, s.end, s.why] for s in skipped],
        }
    if op == "seek":
        return {str(p): o for p, o in answer.items()}
    if op == "put":
        info, created = answer
        return [info, created]
    return answer


def decode_answer(op: str, raw: Any) -> Any:
    """What :func:`encode_answer` made, as the local operation answers it."""
    if op == "fetch":
        deliveries = [
            Delivery(p, o, payload.encode(), lease, n) for p, o, payload, lease, n in raw["records"]
        ]
        return deliveries, [Skipped(p, f, e, why) for p, f, e, why in raw["skipped"]]
    if op == "seek":
        return {int(p): o for p, o in raw.items()}
    if op == "put":
        return raw[0], raw[1]
    return raw
