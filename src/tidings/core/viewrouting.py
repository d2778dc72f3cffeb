"""A repartitioned view's two stages, as the hub sees them.

A view whose key is not its events' ``partitionkey`` (the shop's
``sales_per_minute``: keyed by SKU over orders partitioned by order id) can still be
shared by processes if it is declared ``repartition``. Its work is then two stages of
tasks, numbered in one range so that :mod:`tidings.core.viewmembers` shares them all:

- stage 2, tasks ``0 .. N-1``: the view itself, partitioned, over the internal topic
  ``__view.{name}.by-key`` of N partitions (its key is that topic's
  ``partitionkey`` by construction); task q commits to changelog partition q;
- stage 1, tasks ``N .. N+R-1``: routing, one per input partition (the inputs in
  order, each partition in order). Task ``N+i`` reads its input partition, computes
  the view's key of each event and sends a copy keyed by it (id
  ``{view}.{generation}.{topic}.{partition}.{offset}``, the original ``time``, id
  and partitionkey, and topic if the view has several inputs: :func:`make_copy`)
  with its commit, whose only record is a checkpoint naming the next offset of
  that input partition. The view's tasks hand the operator the original event at
  its input position (:func:`original`), so its key, its fold, its late events and
  their ids are what they would be without the repartition.

Such a commit is a routing commit (:func:`check_route_commit`): under the view's lock
the hub checks it as any commit (generation, expected end of the task's changelog
partition), then publishes the copies to the repartition topic, and only once that is
durable appends the checkpoint (:func:`route_and_land`). A crash in between (of the
hub) leaves copies without a checkpoint: the task redoes them, with the same ids.
The hub's dedupe drops those still within its window; and the first routing commit
of a task after the hub starts looks for the task's copies past its last
checkpoint, so none is stored twice however long the hub was down. The
checkpoint also records ``routed``: per partition of the repartition topic, the
offset past the copies this task has published, so that ``min_position`` can wait
for stage 2 to have processed them (:mod:`tidings.core.viewreads`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.storage import PartitionStore
from tidings.core.viewfollow import catch_up
from tidings.core.viewrecords import MAX_COMMIT_EVENTS, MAX_TASKS
from tidings.errors import BadRequest
from tidings.events.envelope import normalize_event

if TYPE_CHECKING:
    from tidings.core.hub import Hub
    from tidings.core.viewstate import View

__all__ = [
    "check_route_commit", "make_copy", "original", "route_and_land", "routers_of", "stages",
]


def routers_of(
    hub: Hub, inputs: list[str], wanted: int | bool
) -> tuple[int, list[tuple[str, int]]]:
    """``(N, routers)`` of a repartitioned view: N the partitions of its repartition
    topic (``wanted``, or for True the most partitions of an input), and the input
    partitions its routing tasks read, in task order. An input still to be made gets
    one partition, as a group's topic does."""
    counts = {t: len(hub.topics[t].partitions) if t in hub.topics else 1 for t in inputs}
    n = max(counts.values()) if wanted is True else int(wanted)
    routers = [(t, p) for t in inputs for p in range(counts[t])]
    if n + len(routers) > MAX_TASKS:
        raise BadRequest(
            f"a repartitioned view runs a task per input partition ({len(routers)}) and "
            f"one per partition of its repartition topic ({n}): at most {MAX_TASKS} in all",
            field="repartition",
        )
    return n, routers


def check_route_commit(
    view: View, task: int, checked: list[dict[str, Any]], route: object
) -> list[dict[str, Any]] | None:
    """The copies a routing task's commit publishes (checked), or None for a commit of
    any other task (which must then carry no ``route``)."""
    name = view.name
    if not view.repartition or task < view.repartition:
        if route is not None:
            raise BadRequest(
                f"only a routing task of a repartitioned view sends route; task {task} of "
                f"view {name!r} is not one",
                field="route",
            )
        return None
    topic, partition = view.routers[task - view.repartition]
    if len(checked) != 1:
        raise BadRequest(
            f"task {task} of view {name!r} routes {topic!r} partition {partition}: its "
            "commit holds its checkpoint only (the copies go in route)",
            field="events",
        )
    inputs = checked[0].get("data", {}).get("inputs") or {}
    if set(inputs) - {topic} or set(inputs.get(topic) or {}) - {str(partition)}:
        raise BadRequest(
            f"the checkpoint of task {task} of view {name!r} must name partition "
            f"{partition} of {topic!r} only, which the task routes",
            field="events",
        )
    if route is None:
        route = []
    if not isinstance(route, list) or len(route) > MAX_COMMIT_EVENTS:
        raise BadRequest(
            f"route must be a list of at most {MAX_COMMIT_EVENTS} events", field="route"
        )
    copies: list[dict[str, Any]] = []
    for i, ev in enumerate(route):
        if not isinstance(ev, dict) or not isinstance(ev.get("partitionkey"), str):
            raise BadRequest(
                f"route[{i}] must be an event whose partitionkey is the view's key",
                field=f"route[{i}]",
            )
        if not isinstance(ev.get("id"), str):
            raise BadRequest(f"route[{i}] needs an id (derived from where it was read)",
                             field=f"route[{i}]")
        copies.append(normalize_event(ev, topic=view.by_key))
    return copies


async def route_and_land(
    hub: Hub, view: View, task: int, part: PartitionStore,
    copies: list[dict[str, Any]], checked: list[dict[str, Any]], expect_end: int | None = None,
) -> int:
    """Publish ``copies`` to the repartition topic, then append the routing task's
    checkpoint (with ``routed``; only at ``expect_end``, else WrongEnd) and apply it:
    its offset (under the view's lock)."""
    previous = view.checkpoints.get(task, {}).get("routed")
    routed: dict[str, int] = dict(previous) if isinstance(previous, dict) else {}
    if task not in view.verified:
        # Copies published with no checkpoint after them (the hub stopped between the
        # two, or the append failed) may be older than the dedupe window by now: look
        # for them past the last checkpoint's offsets, once per task and hub run.
        # Kept until the task routes them again (in this commit or a later one).
        topic, partition = view.routers[task - view.repartition]
        view.already[task] = await _published_since(
            hub, view, routed, f"{view.name}.{view.generation}.{topic}.{partition}."
        )
        view.verified.add(task)
    there = view.already.get(task)
    if there:
        keep: list[dict[str, Any]] = []
        for c in copies:
            hit = there.pop(c["id"], None)
            if hit is None:
                keep.append(c)
            else:  # stored already: not again, but counted as routed
                routed[str(hit[0])] = max(routed.get(str(hit[0]), 0), hit[1] + 1)
        copies = keep
    if not there:
        view.already.pop(task, None)
    checkpoint = checked[-1]
    try:
        if copies:
            for pub in await hub.publish(view.by_key, copies, own=True):
                key = str(pub.partition)
                routed[key] = max(routed.get(key, 0), pub.offset + 1)
        checkpoint["data"] = {**checkpoint.get("data", {}), "routed": routed}
        base = await part.append([orjson.dumps(e) for e in checked], expect_end=expect_end)
    except BaseException:
        view.verified.discard(task)  # perhaps copies without a checkpoint: look again
        raise
    await catch_up(view, task, part, base)  # what other nodes committed before
    last = base + len(checked) - 1
    got = await part.read(last, 1)
    ts = got[0][1] if got and got[0][0] == last else hub.clock.time_ms()
    for i, event in enumerate(checked):
        view.apply(task, base + i, ts, event)
    view.changed()
    return base


async def _published_since(
    hub: Hub, view: View, routed: dict[str, int], prefix: str
) -> dict[str, tuple[int, int]]:
    """The copies whose id starts with ``prefix`` (one routing task's) in the
    repartition topic past ``routed`` (its last checkpoint's offsets): id ->
    (partition, offset)."""
    found: dict[str, tuple[int, int]] = {}
    for p, part in enumerate(hub.topic(view.by_key).partitions):
        offset = max(int(routed.get(str(p), 0)), part.start_offset)
        while offset < part.end_offset:
            got = await part.read(offset, 1000)
            if not got:
                break
            for o, _, payload in got:
                eid = orjson.loads(payload).get("id")
                # The prefix then an offset: a topic named "a.1" is not partition 1 of "a".
                if isinstance(eid, str) and eid.startswith(prefix) and eid[len(prefix):].isdigit():
                    found[eid] = (p, o)
            offset = got[-1][0] + 1
            await asyncio.sleep(0)  # others run meanwhile
    return found


def stages(view: View) -> dict[str, Any]:
    """A repartitioned view's stages, in a members answer or info: tasks below
    ``partitions`` run the view over ``topic``, the others route ``routers[task - N]``."""
    if not view.repartition:
        return {}
    return {"repartition": {
        "topic": view.by_key, "partitions": view.repartition,
        "routers": [[t, p] for t, p in view.routers],
    }}  # fmt: skip


# What a copy in the repartition topic holds besides its original event: where it
# came from, so that the view's tasks see the original (its id, its partitionkey,
# and the input position late events and ids are derived from).
ROUTED_ID, ROUTED_KEY, ROUTED_TOPIC = "routedid", "routedkey", "routedtopic"


def make_copy(
    ev: dict[str, Any], copy_id: str, key: str, topic: str | None
) -> dict[str, Any]:
    """The copy of input event ``ev`` that a routing task publishes: keyed by the view's
    ``key``, id ``copy_id`` (``{view}.{generation}.{topic}.{partition}.{offset}``), the
    original id and partitionkey kept as ``routedid``/``routedkey``, and the input
    topic as ``routedtopic`` when the view has several inputs."""
    copy = dict(ev)
    copy[ROUTED_ID] = ev.get("id")
    if "partitionkey" in ev:
        copy[ROUTED_KEY] = ev["partitionkey"]
    if topic is not None:
        copy[ROUTED_TOPIC] = topic
    copy["id"] = copy_id
    copy["partitionkey"] = key
    return copy


def original(
    rec: tuple[int, int, int, int, dict[str, Any]], inputs: tuple[str, ...]
) -> tuple[int, int, int, int, dict[str, Any]]:
    """A record of the repartition topic as the view's operator gets it: the original
    event, at its input's index, partition and offset (the append time is the copy's)."""
    ev = dict(rec[4])
    _, p, o = ev["id"].rsplit(".", 2)
    ev["id"] = ev.pop(ROUTED_ID, None)
    key = ev.pop(ROUTED_KEY, None)
    if key is None:
        del ev["partitionkey"]
    else:
        ev["partitionkey"] = key
    topic = ev.pop(ROUTED_TOPIC, None)
    i = inputs.index(topic) if topic in inputs else 0
    return i, int(p), int(o), rec[3], ev
