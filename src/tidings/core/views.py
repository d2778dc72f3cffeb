"""Views: what stream processors compute, kept and served by the hub (streams design 3, 4).

A view's state is its changelog topic ``__view.{name}``, one partition per task
(one task, or for a ``partitioned`` view one per input partition), written only
through :meth:`Views.commit`: the records of one commit (``v:{key}`` served
values, ``s:{name}`` operator state, then one ``c`` checkpoint) go in as ONE
append to the task's partition, all or nothing across a crash, and only if that
partition ends at the offset the processor expects and the generation is the
view's (compare and set: one writer per task at a time, whoever it is). The
processes running a partitioned view share its tasks through
:meth:`Views.members` (:mod:`tidings.core.viewmembers`). The hub materializes
every changelog in memory: each served key's latest value with the partition
and offset of the record holding it, and each task's latest checkpoint. It
builds them at start by reading the changelogs and applies each commit once it
is durable, so what it serves is always whole commits. :meth:`Views.rebuild`
drops and recreates the changelog under the next generation: the processor's
next commit gets 409, and it replays from earliest.

The declaration (kind, inputs, app, window, emit, partitioned, tasks,
generation) is kept in the changelog topic's saved config
(``Storage.save_topic``), under ``"view"``. The reads, and the change feed (SSE,
WebSocket), a cursor over every partition of the changelog, are
:mod:`tidings.core.viewreads`.

Imports the core below it; the hub makes one (``hub.views``); ``server/views``
serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.positions import check_name
from tidings.core.storage import PartitionStore, Retention, WrongEnd
from tidings.core.viewfollow import Follower, adopt, catch_up, view_from
from tidings.core.viewmembers import HEARTBEAT_MS, check_member
from tidings.core.viewreads import ViewReads
from tidings.core.viewrecords import (
    BY_KEY_SUFFIX,
    by_key_topic,
    changelog_topic,
    check_commit,
    parse_repartition,
    parse_spec,
    result_topics,
    view_of,
    whole,
)
from tidings.core.viewrouting import check_route_commit, route_and_land, routers_of, stages
from tidings.core.viewstate import View
from tidings.errors import BadRequest, Conflict, StorageUnavailable, ViewNotFound

if TYPE_CHECKING:
    from tidings.core.hub import Hub

logger = logging.getLogger("tidings.views")

MAX_NAME = 200  # of a topic (check_name)
_LOAD_BATCH = 1000

# A changelog keeps the latest record per key (v:, s:, and the checkpoint c):
# compaction bounds it by the keys, not by the commits made.
CHANGELOG_RETENTION = Retention(compaction="key")
# A repartition topic keeps every copy: its stage 2 tasks, restored from an empty
# changelog partition, read it from earliest (a rebuild remakes both).
BY_KEY_RETENTION = Retention()


class Views(ViewReads):
    """Every view of one hub: declare, commit, rebuild, and serve (see the module doc)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.views: dict[str, View] = {}
        self.loaded = asyncio.Event()  # set once every changelog is read at start
        self._loading: asyncio.Task[None] | None = None
        self._declaring = asyncio.Lock()
        self.followers: dict[str, Follower] = {}  # commits of other nodes (viewfollow)

    # -- life ----------------------------------------------------------------------

    async def start(self) -> None:
        """Find the views in the saved topic configs and read their changelogs in the
        background; :attr:`loaded` is set once done (declarations, commits and waits
        wait for it; the other reads answer 503 until then)."""
        for topic, cfg in (await self.hub.storage.load_topics()).items():
            name = view_of(topic)
            decl = cfg.get("view")
            if name is None or not isinstance(decl, dict) or topic not in self.hub.topics:
                continue
            self.views[name] = view_from(name, decl, len(self.hub.topics[topic].partitions))
        self._loading = asyncio.get_running_loop().create_task(self._load_all())

    async def _load_all(self) -> None:
        try:
            for view in list(self.views.values()):
                try:
                    await self._load(view)
                    self._follow(view)
                except Exception as exc:
                    # Served as 503, never as a partial state, and never made again over
                    # what is on disk (a declaration would otherwise take the name over).
                    view.failed = f"{type(exc).__name__}: {exc}"
                    logger.exception("view %r not loaded from its changelog", view.name)
        finally:
            self.loaded.set()

    async def _load(self, view: View) -> None:
        for p, part in enumerate(self.hub.topic(view.topic).partitions):
            offset = part.start_offset
            while offset < part.end_offset:
                got = await part.read(offset, _LOAD_BATCH)
                if not got:
                    break
                for o, ts, payload in got:
                    view.apply(p, o, ts, orjson.loads(payload))
                offset = got[-1][0] + 1
                await asyncio.sleep(0)  # others run meanwhile
            view.applied[p] = part.end_offset
        logger.info("view %r loaded: %d keys", view.name, len(view.values))

    async def reload(self, name: str) -> None:
        """Serve view ``name`` as the storage now holds it: laid out anew through another
        node sharing it (a rebuild, a new generation), its state here is of a changelog
        that is gone. Read again from its declaration and changelog (as :func:`adopt`
        does); whoever waits on the old state is woken."""
        follower = self.followers.pop(name, None)
        if follower is not None:
            await follower.close()
        old = self.views.pop(name, None)
        if old is not None:
            old.changed()
        await adopt(self, name)

    def _follow(self, view: View) -> None:
        if view.name not in self.followers:
            self.followers[view.name] = Follower(self.hub, view, _landed)

    async def close(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(BaseException):
                await self._loading
        for follower in self.followers.values():
            await follower.close()
        for view in self.views.values():
            await _landed(view)
            view.changed()

    async def ready(self, timeout: float = 10.0, name: str | None = None) -> None:
        """Wait until the changelogs are read; 503 if that takes longer than ``timeout``.
        ``name``: a view this node does not know is looked for in the storage (declared
        through another node sharing it since this one started: see ``adopt``)."""
        if not self.loaded.is_set():
            try:
                await asyncio.wait_for(self.loaded.wait(), timeout)
            except TimeoutError:
                raise _loading() from None
        if name is not None and name not in self.views:
            await adopt(self, name)

    def _check_loaded(self) -> None:
        """503 while the changelogs are read at start: a read then could see part of a
        commit. The reads are synchronous; :meth:`ready` waits instead."""
        if not self.loaded.is_set():
            raise _loading()

    # -- declare, commit, rebuild -----------------------------------------------------

    def view(self, name: str) -> View:
        """View ``name``, once the changelogs are read (503 before; 404 if there is none)."""
        self._check_loaded()
        view = self.views.get(name)
        if view is None:
            check_name("view", name)
            raise ViewNotFound(f"view {name!r} does not exist", view=name)
        if view.failed is not None:
            raise StorageUnavailable(
                f"view {name!r} could not be read from its changelog when the hub started "
                f"({view.failed}); repair it and restart",
                view=name,
            )
        return view

    async def put(self, name: str, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Declare view ``name``; its info, and True if it was created.

        A view declared again with the same kind and inputs keeps its state (its
        app, window and emit are updated); other inputs or another kind: 409. An input
        that does not exist is made, as a consumer group's topic is (under
        auto-create; else TopicNotFound), and so are a window view's result topics
        ``{name}`` and ``{name}.late``. Everything is checked before anything is made.

        A ``partitioned`` view has one task per input partition, and its inputs must
        have the same number of partitions (400 otherwise); its changelog has one
        partition per task. Declared again with another layout (``partitioned`` or
        not, or another number of tasks): 409 naming both, the view unchanged; the
        layout changes only by :meth:`rebuild` (which takes ``partitioned``).
        """
        check_name("view", name)
        if name.endswith(BY_KEY_SUFFIX):
            raise BadRequest(
                f"view name {name!r} must not end in {BY_KEY_SUFFIX} (the changelog would be "
                f"taken for the repartition topic of view {name.removesuffix(BY_KEY_SUFFIX)!r})",
                field="view",
            )
        await self.ready()
        kind, inputs, app, window, emit, partitioned = parse_spec(spec)
        wanted = parse_repartition(spec)
        view = self.view(name) if name in self.views else None  # 503 for one not loaded
        results = result_topics(name) if kind == "window" else []
        tasks = self._tasks(name, inputs) if partitioned else 1
        repartition, routers = 0, list[tuple[str, int]]()
        if wanted is not False:
            repartition, routers = routers_of(self.hub, inputs, wanted)
            tasks = repartition + len(routers)
        hub = self.hub
        if view is not None:
            async with view.lock:
                for what, old, new in (("kind", view.kind, kind), ("inputs", view.inputs, inputs)):
                    if old != new:
                        raise Conflict(
                            f"view {name!r} is declared with {what} {old!r}, not {new!r}; "
                            "a view's kind and inputs do not change: declare another name",
                            field=what,
                        )
                if (partitioned, tasks, repartition, routers) != (
                    view.partitioned, view.tasks, view.repartition, view.routers
                ):
                    flag = (
                        f"--repartition {repartition}" if repartition
                        else f"--{'' if partitioned else 'no-'}partitioned"
                    )
                    raise Conflict(
                        f"view {name!r} is "
                        f"{_layout(view.partitioned, view.tasks, view.repartition)}; this "
                        f"declaration asks for {_layout(partitioned, tasks, repartition)}: a "
                        f"new layout empties the view; rebuild it so (tidings views rebuild "
                        f"{name} {flag})",
                        field="repartition" if repartition or view.repartition else "partitioned",
                        partitioned=view.partitioned, tasks=view.tasks,
                    )  # fmt: skip
                # Inputs (or result topics) deleted since are made again: the processor
                # would otherwise wait for them for ever.
                await self._make_missing([*inputs, *results], 0)
                view.app, view.window, view.emit = app, window, emit
                await self._save(view)
            return self.info(name), False
        async with self._declaring:  # one new view at a time: each finds the others made
            if name in self.views:  # declared while this one waited
                return await self.put(name, spec)
            self._check_results(name, inputs, results)
            topic = changelog_topic(name)
            hub._check_not_deleting(topic)
            by_key = by_key_topic(name)
            hub._check_not_deleting(by_key)
            # A declaration lost halfway (a crash), or a changelog the hub could not open.
            taken_over = topic in hub.topics or topic in hub.unavailable
            own = 1 + (1 if repartition else 0)
            await self._make_missing([*inputs, *results], 0 if taken_over else own)
            if taken_over:
                await hub.delete_topic(topic)
            if by_key in hub.topics or by_key in hub.unavailable:
                await hub.delete_topic(by_key)
            # The hub's own topics: check_name, which refuses the leading '_', is not asked.
            if repartition:
                await hub._open_topic(by_key, repartition, BY_KEY_RETENTION)
            await hub._open_topic(topic, tasks, CHANGELOG_RETENTION)
            view = View(name, kind, inputs, app, window, emit, partitioned=partitioned)
            view.layout(tasks, repartition, routers)
            view.asked = wanted
            self.views[name] = view
            self._follow(view)
            await self._save(view)
            return self.info(name), True

    def _tasks(self, name: str, inputs: list[str]) -> int:
        """A partitioned view's tasks: its inputs' partition count, which must be one
        (co-partitioned: partition p of every input holds the same keys). An input
        still to be made gets one partition, as a group's topic does."""
        counts = {t: len(self.hub.topics[t].partitions) if t in self.hub.topics else 1
                  for t in inputs}
        if len(set(counts.values())) > 1:
            named = ", ".join(f"{t!r} has {n}" for t, n in counts.items())
            raise BadRequest(
                f"the inputs of partitioned view {name!r} must have the same number of "
                f"partitions, so that partition p of each holds the same keys: {named}; "
                "make them alike, or declare the view without partitioned (one task)",
                field="inputs",
            )
        return next(iter(counts.values()))

    async def _recreate(self, view: View, tasks: int, repartition: int,
                        routers: list[tuple[str, int]]) -> None:
        """Drop the changelog (and the repartition topic) and make them again empty, of
        ``tasks`` partitions, under the next generation (under the view's lock)."""
        hub = self.hub
        await hub.delete_topic(view.topic)
        if view.by_key in hub.topics or view.by_key in hub.unavailable:
            await hub.delete_topic(view.by_key)
        view.generation += 1
        view.layout(tasks, repartition, routers)
        if repartition:
            await hub._open_topic(view.by_key, repartition, BY_KEY_RETENTION)
        await hub._open_topic(view.topic, tasks, CHANGELOG_RETENTION)
        view.changed()

    async def _make_missing(self, topics: list[str], more: int) -> None:
        """Make the topics that do not exist, as a consumer group's are (under
        auto-create, else TopicNotFound), once each is known to be makeable and there is
        room for them and ``more`` topics besides: all of them or none."""
        hub = self.hub
        async with hub._creating:  # counted and made with no other creation between
            missing = [t for t in topics if t not in hub.topics]
            for t in missing:
                hub._check_publishable(t)
            limit = hub.options.max_topics
            count = len(hub.topics) + len(hub.unavailable)
            if (missing or more) and count + len(missing) + more > limit:
                raise Conflict(
                    f"the hub has {count} topics and the view needs {len(missing) + more} "
                    f"more, past its limit (--max-topics {limit}); delete a topic or raise "
                    "the limit", limit="max_topics", max_topics=limit,
                )  # fmt: skip
            for t in missing:
                await hub._open_topic_now(t, 1, Retention())

    def _check_results(self, name: str, inputs: list[str], results: list[str]) -> None:
        """A new window view's result topics: valid names, none of its inputs, none
        another window view's, and none an existing topic that holds events."""
        if not results:
            return
        late = results[-1]
        if len(late) > MAX_NAME:
            raise BadRequest(
                f"view name {name!r} is too long for a window view: its late topic "
                f"{late!r} would be over {MAX_NAME} characters",
                field="view",
            )
        for r in results:
            if r in inputs:
                raise BadRequest(
                    f"topic {r!r} is both an input and a result topic of window view "
                    f"{name!r}: it would read what it writes",
                    field="inputs",
                )
            owner = next(
                (v.name for v in self.views.values()
                 if v.kind == "window" and v.name != name and r in result_topics(v.name)),
                None,
            )  # fmt: skip
            if owner is not None:
                raise Conflict(
                    f"topic {r!r} is a result topic of window view {owner!r}: name window "
                    f"view {name!r} otherwise",
                    field="view", topic=r,
                )  # fmt: skip
            t = self.hub.topics.get(r)
            if t is not None and any(part.end_offset for part in t.partitions):
                raise Conflict(
                    f"topic {r!r} already holds events not written for window view "
                    f"{name!r}, whose results would go there: name the view otherwise",
                    field="view", topic=r,
                )  # fmt: skip

    async def _save(self, view: View) -> None:
        config = dict((await self.hub.storage.load_topics()).get(view.topic, {}))
        config["view"] = view.declaration()
        await self.hub.storage.save_topic(view.topic, config)

    async def commit(
        self, name: str, generation: object, expect: object, events: object,
        partition: object = 0, route: object = None,
    ) -> dict[str, int]:
        """Append one commit to changelog partition ``partition`` (the task's) if it
        ends at ``expect`` and the view is at ``generation``: ``{"offset": first,
        "next": one past the last}``; else 409 naming that partition's
        ``next_offset`` and the view's ``generation``.

        ``route``: a routing task of a repartitioned view (partition N and up) sends
        the copies of the events it read, which the hub publishes to
        ``__view.{name}.by-key`` first (deduplicated by id) and only then appends the
        task's checkpoint (:mod:`tidings.core.viewrouting`)."""
        await self.ready()
        view = self.view(name)
        gen = whole(generation, "generation")
        at = whole(expect, "expect")
        task = whole(partition, "partition")
        async with view.lock:
            await _landed(view)
            if task >= view.tasks:
                raise BadRequest(
                    f"view {name!r} has {view.tasks} task(s), so its changelog partitions "
                    f"0 to {view.tasks - 1}: there is no partition {task}",
                    field="partition",
                )
            part = self.hub.topic(view.topic).partitions[task]
            end = part.end_offset
            if gen != view.generation:
                raise Conflict(
                    f"view {name!r} is at generation {view.generation}, not {gen}: it was "
                    "rebuilt; reload it from its changelog",
                    field="generation", generation=view.generation, next_offset=end,
                )  # fmt: skip
            if at < end:  # past it: the store decides (another node may have appended)
                raise _lost(view, at, end)
            # Checked under the lock (the CAS holds meanwhile): a commit that lost the
            # race is told so (409) before anything about its events.
            checked = check_commit(name, gen, events, self.hub.options.max_event_bytes)
            self._check_inputs(view, task, events, checked.events[-1].get("data") or {})
            copies = check_route_commit(view, task, checked.events, route)
            if copies is not None:
                landing = asyncio.get_running_loop().create_task(
                    route_and_land(self.hub, view, task, part, copies, checked.events, at)
                )
                view.landing = landing
                try:
                    base = await asyncio.shield(landing)
                except WrongEnd as exc:
                    raise _lost(view, at, exc.end) from None
                finally:
                    if landing.done():
                        view.landing = None
                return {"offset": base, "next": base + len(checked.events)}
            # Once the append starts it lands whatever happens to the caller, so it is
            # applied whatever happens too: in a task of its own, which the next holder
            # of the lock waits for (applied in changelog order).
            # Only at ``at``: on a shared backend the store decides, against every node.
            try:
                durable = part.append(checked.payloads, expect_end=at)  # offsets taken now
            except WrongEnd as exc:
                raise _lost(view, at, exc.end) from None
            landing = asyncio.get_running_loop().create_task(
                self._land(view, task, part, durable, checked.events)
            )
            view.landing = landing
            try:
                base = await asyncio.shield(landing)
            except WrongEnd as exc:
                raise _lost(view, at, exc.end) from None
            finally:
                if landing.done():  # else the caller is cancelled: the next one waits
                    view.landing = None
        return {"offset": base, "next": base + len(checked.payloads)}

    def _check_inputs(
        self, view: View, task: int, events: object, checkpoint: dict[str, Any]
    ) -> None:
        """The checkpoint's ``inputs`` name only the view's inputs and partitions they
        have (a deleted input: any a topic may have); a partitioned view's task names
        its own partition of each (what the view reflects is the union)."""
        where = f"events[{_checkpoint_index(events)}].data.inputs"
        # A repartitioned view's own tasks read its repartition topic (their partition
        # of it); its routing tasks, one input partition each (check_route_commit).
        reads = view.inputs
        if view.repartition:
            reads = [view.by_key] if task < view.repartition else view.inputs
        own_partition = view.partitioned or (view.repartition > 0 and task < view.repartition)
        for topic, at in (checkpoint.get("inputs") or {}).items():
            if topic not in reads:
                raise BadRequest(
                    f"{where} names topic {topic!r}, which task {task} of view "
                    f"{view.name!r} does not read (it reads: {', '.join(reads)})",
                    field=where,
                )
            t = self.hub.topics.get(topic)
            count = len(t.partitions) if t is not None else self.hub.options.max_partitions
            beyond = sorted(int(p) for p in at if int(p) >= count)
            if beyond:
                raise BadRequest(
                    f"{where} names partition {beyond[0]} of {topic!r}, which has {count} "
                    f"partition(s), 0 to {count - 1}",
                    field=where,
                )
            others = sorted(int(p) for p in at if int(p) != task)
            if own_partition and others:
                raise BadRequest(
                    f"the checkpoint of task {task} of partitioned view {view.name!r} names "
                    f"partition {others[0]} of {topic!r}: a task reads its own partition "
                    "of every input",
                    field="events",
                )

    async def _land(
        self,
        view: View,
        task: int,
        part: PartitionStore,
        durable: Awaitable[int],
        checked: list[dict[str, Any]],
    ) -> int:
        base = await durable
        await catch_up(view, task, part, base)  # what other nodes committed before
        last = base + len(checked) - 1
        got = await part.read(last, 1)  # the checkpoint: its append time is the commit's
        ts = got[0][1] if got and got[0][0] == last else self.hub.clock.time_ms()
        for i, event in enumerate(checked):
            view.apply(task, base + i, ts, event)
        view.changed()
        return base

    async def rebuild(
        self, name: str, partitioned: object = None, repartition: object = None
    ) -> dict[str, Any]:
        """Empty the view under the next generation: its changelog is dropped and made
        again, laid out anew: one task per input partition if ``partitioned``, routed
        by key if ``repartition`` (true or a number of partitions, as declared), else
        one task; both None leave the layout as it was."""
        await self.ready()
        view = self.view(name)
        if partitioned is not None and not isinstance(partitioned, bool):
            raise BadRequest(
                f"partitioned must be true or false, not {partitioned!r}", field="partitioned"
            )
        asked = None if repartition is None else parse_repartition(
            {"repartition": repartition, "partitioned": partitioned or False}
        )
        async with view.lock:
            await _landed(view)
            wanted: int | bool
            if partitioned is None and asked is None:  # as it is, inputs recounted
                keep, wanted = view.partitioned, view.asked
            else:
                keep, wanted = bool(partitioned), False if asked is None else asked
            tasks = self._tasks(name, view.inputs) if keep else 1
            routed, routers = 0, list[tuple[str, int]]()
            if wanted is not False:
                routed, routers = routers_of(self.hub, view.inputs, wanted)
                tasks = routed + len(routers)
            view.partitioned, view.asked = keep, wanted
            await self._recreate(view, tasks, routed, routers)
            await self._save(view)
        return self.info(name)

    async def members(self, name: str, member: object, leave: object = False) -> dict[str, Any]:
        """A process running view ``name`` heartbeats (or leaves): the tasks it runs,
        and how many tasks and live members there are (who runs what is the view's
        :meth:`info`: an answer of every member to each would grow with their square);
        see :mod:`tidings.core.viewmembers`."""
        await self.ready()
        view = self.view(name)
        who = check_member(member)
        if not isinstance(leave, bool):
            raise BadRequest(f"leave must be true or false, not {leave!r}", field="leave")
        now = self.hub.clock.time_ms()
        tasks = view.members.heartbeat(who, now, leave=leave)
        return {
            "member": who, "tasks": tasks, "generation": view.generation,
            "task_count": view.tasks, "heartbeat_ms": HEARTBEAT_MS,
            "session_timeout_ms": view.members.timeout_ms,
            "member_count": len(view.members.seen), **stages(view),
        }  # fmt: skip


def _lost(view: View, at: int, end: int) -> Conflict:
    """The 409 of a commit whose changelog partition does not end at ``at``."""
    return Conflict(
        f"the changelog of view {view.name!r} ends at offset {end}, not {at}: another "
        "commit came first; reload it from its changelog",
        field="expect", generation=view.generation, next_offset=end,
    )  # fmt: skip


def _loading() -> StorageUnavailable:
    return StorageUnavailable(
        "the hub is still reading the views' changelogs; retry shortly", retry_after=1
    )


async def _landed(view: View) -> None:
    """Wait until the last commit's append (if any) is applied; its failure was its
    caller's to see (or, the caller gone, is logged)."""
    landing = view.landing
    if landing is None:
        return
    try:
        await asyncio.shield(landing)
    except asyncio.CancelledError:
        if not landing.done():
            raise  # this caller is cancelled, not the landing
    except WrongEnd:
        pass  # lost a race: nothing was stored
    except Exception:
        logger.exception("view %r: the append of a commit whose caller left failed", view.name)
    if view.landing is landing:
        view.landing = None


def _checkpoint_index(events: object) -> int:
    """Where the (checked) commit's checkpoint lies in ``events``."""
    assert isinstance(events, list)
    return next(
        i for i, e in enumerate(events) if isinstance(e, dict) and e.get("partitionkey") == "c"
    )


def _layout(partitioned: bool, tasks: int, repartition: int = 0) -> str:
    if repartition:
        return f"repartitioned over {repartition} partition(s), {tasks} task(s)"
    return f"partitioned, {tasks} task(s)" if partitioned else "not partitioned (one task)"
