"""Views: what stream processors compute, kept and served by the hub (streams design 3, 4).

A view's state is its changelog topic ``__view.{name}``, one partition, written
only through :meth:`Views.commit`: the records of one commit (``v:{key}`` served
values, ``s:{name}`` operator state, then one ``c`` checkpoint) go in as ONE
append, all or nothing across a crash, and only if the changelog ends at the
offset the processor expects and the generation is the view's (compare and set:
one writer at a time, whoever it is). The hub materializes every changelog in
memory: each served key's latest value with the offset of the record holding it,
and the latest checkpoint. It builds them at start by reading the changelogs and
applies each commit once it is durable, so what it serves is always a whole
commit. :meth:`Views.rebuild` drops and recreates the changelog under the next
generation: the processor's next commit gets 409, and it replays from earliest.

The declaration (kind, inputs, app, window, emit, generation) is kept in the
changelog topic's saved config (``Storage.save_topic``), under ``"view"``.
The change feed (SSE, WebSocket) is a cursor over the changelog: a snapshot of
the materialized keys at an offset, then each ``v:`` record after it.

Imports the core below it; the hub makes one (``hub.views``); ``server/views``
serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_left, bisect_right, insort
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.positions import check_name
from tidings.core.storage import PartitionStore, Retention
from tidings.core.viewrecords import (
    Change,
    change_of,
    changelog_topic,
    check_commit,
    parse_spec,
    result_topics,
    view_of,
    whole,
)
from tidings.errors import BadRequest, Conflict, StorageUnavailable, ViewNotFound

if TYPE_CHECKING:
    from tidings.core.hub import Hub

logger = logging.getLogger("tidings.views")

MAX_SCAN = 1000
MAX_NAME = 200  # of a topic (check_name)
_LOAD_BATCH = 1000

# A changelog keeps the latest record per key (v:, s:, and the checkpoint c):
# compaction bounds it by the keys, not by the commits made.
CHANGELOG_RETENTION = Retention(compaction="key")


@dataclass(frozen=True, slots=True)
class Feed:
    """What :meth:`Views.changes` answers: changes from an offset, the offset after
    them, and ``reset`` when the cursor no longer fits the changelog (a rebuild):
    the reader takes a new snapshot."""

    changes: list[Change]
    next: int
    reset: bool = False


@dataclass(slots=True)
class View:
    """One view's declaration and materialized state."""

    name: str
    kind: str
    inputs: list[str]
    app: str | None
    window: dict[str, Any] | None
    emit: str | None
    generation: int = 0
    values: dict[str, tuple[Any, int]] = field(default_factory=dict)  # key -> (value, offset)
    keys: list[str] = field(default_factory=list)  # the keys of values, sorted
    checkpoint: dict[str, Any] | None = None  # data of the latest c record
    checkpoint_offset: int | None = None
    last_commit_ms: int | None = None  # append time of the latest checkpoint
    applied: int = 0  # the changelog offset up to which the state reflects it
    failed: str | None = None  # why its changelog could not be read at start (503)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one commit or rebuild at a time
    # A commit's append and its apply, run apart from the caller (which may be
    # cancelled); whoever takes the lock next waits for it first.
    landing: asyncio.Task[int] | None = None
    pulse: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) on change

    @property
    def topic(self) -> str:
        return changelog_topic(self.name)

    def declaration(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "inputs": list(self.inputs), "app": self.app,
            "window": self.window, "emit": self.emit, "generation": self.generation,
        }  # fmt: skip

    def apply(self, offset: int, ts: int, event: dict[str, Any]) -> Change | None:
        """Apply one changelog record; the served change it makes, if any."""
        self.applied = offset + 1
        pk = event.get("partitionkey")
        data = event.get("data")
        if pk == "c":
            self.checkpoint = data if isinstance(data, dict) else None
            self.checkpoint_offset = offset
            self.last_commit_ms = ts
            return None
        if not isinstance(pk, str) or not pk.startswith("v:"):
            return None  # s: records are the processor's, not served
        key = pk[2:]
        if isinstance(data, dict) and "value" in data:
            if key not in self.values:
                insort(self.keys, key)
            self.values[key] = (data["value"], offset)
            return Change(key, data["value"], False, offset)
        if self.values.pop(key, None) is not None:
            del self.keys[bisect_left(self.keys, key)]
        return Change(key, None, True, offset)

    def changed(self) -> None:
        """Wake whoever waits on this view (min_position, change feeds)."""
        pulse, self.pulse = self.pulse, asyncio.Event()
        pulse.set()

    def reset(self) -> None:
        self.values.clear()
        self.keys.clear()
        self.checkpoint = self.checkpoint_offset = self.last_commit_ms = None
        self.applied = 0


class Views:
    """Every view of one hub: declare, commit, rebuild, and serve (see the module doc)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.views: dict[str, View] = {}
        self.loaded = asyncio.Event()  # set once every changelog is read at start
        self._loading: asyncio.Task[None] | None = None

    # -- life ----------------------------------------------------------------------

    def start(self) -> None:
        """Find the views in the saved topic configs and read their changelogs in the
        background; :attr:`loaded` is set once done (declarations, commits and waits
        wait for it; the other reads answer 503 until then)."""
        for topic, cfg in self.hub.storage.load_topics().items():
            name = view_of(topic)
            decl = cfg.get("view")
            if name is None or not isinstance(decl, dict) or topic not in self.hub.topics:
                continue
            self.views[name] = View(
                name, decl["kind"], list(decl["inputs"]), decl.get("app"), decl.get("window"),
                decl.get("emit"), int(decl.get("generation", 0)),
            )  # fmt: skip
        self._loading = asyncio.get_running_loop().create_task(self._load_all())

    async def _load_all(self) -> None:
        try:
            for view in list(self.views.values()):
                try:
                    await self._load(view)
                except Exception as exc:
                    # Served as 503, never as a partial state, and never made again over
                    # what is on disk (a declaration would otherwise take the name over).
                    view.failed = f"{type(exc).__name__}: {exc}"
                    logger.exception("view %r not loaded from its changelog", view.name)
        finally:
            self.loaded.set()

    async def _load(self, view: View) -> None:
        part = self.hub.topic(view.topic).partitions[0]
        offset = part.start_offset
        while offset < part.end_offset:
            got = part.read(offset, _LOAD_BATCH)
            if not got:
                break
            for o, ts, payload in got:
                view.apply(o, ts, orjson.loads(payload))
            offset = got[-1][0] + 1
            await asyncio.sleep(0)  # others run meanwhile
        view.applied = part.end_offset
        logger.info("view %r loaded: %d keys", view.name, len(view.values))

    async def close(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(BaseException):
                await self._loading
        for view in self.views.values():
            await _landed(view)
            view.changed()

    async def ready(self, timeout: float = 10.0) -> None:
        """Wait until the changelogs are read; 503 if that takes longer than ``timeout``."""
        if not self.loaded.is_set():
            try:
                await asyncio.wait_for(self.loaded.wait(), timeout)
            except TimeoutError:
                raise _loading() from None

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
        """
        check_name("view", name)
        await self.ready()
        kind, inputs, app, window, emit = parse_spec(spec)
        view = self.view(name) if name in self.views else None  # 503 for one not loaded
        results = result_topics(name) if kind == "window" else []
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
                # Inputs (or result topics) deleted since are made again: the processor
                # would otherwise wait for them for ever.
                self._make_missing([*inputs, *results], 0)
                view.app, view.window, view.emit = app, window, emit
                self._save(view)
            return self.info(name), False
        self._check_results(name, inputs, results)
        topic = changelog_topic(name)
        hub._check_not_deleting(topic)
        taken_over = topic in hub.topics  # a declaration lost halfway (a crash)
        self._make_missing([*inputs, *results], 0 if taken_over else 1)
        if taken_over:
            await hub.delete_topic(topic)
        # The hub's own topic: check_name, which refuses the leading '_', is not asked.
        hub._open_topic(topic, 1, CHANGELOG_RETENTION)
        view = self.views[name] = View(name, kind, inputs, app, window, emit)
        self._save(view)
        return self.info(name), True

    def _make_missing(self, topics: list[str], more: int) -> None:
        """Make the topics that do not exist, as a consumer group's are (under
        auto-create, else TopicNotFound), once each is known to be makeable and there is
        room for them and ``more`` topics besides: all of them or none."""
        hub = self.hub
        missing = [t for t in topics if t not in hub.topics]
        for t in missing:
            hub._check_publishable(t)
        limit = hub.options.max_topics
        count = len(hub.topics) + len(hub.unavailable)
        if (missing or more) and count + len(missing) + more > limit:
            raise Conflict(
                f"the hub has {count} topics and the view needs {len(missing) + more} more, "
                f"past its limit (--max-topics {limit}); delete a topic or raise the limit",
                limit="max_topics", max_topics=limit,
            )  # fmt: skip
        for t in missing:
            hub._topic_for_publish(t)

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

    def _save(self, view: View) -> None:
        config = dict(self.hub.storage.load_topics().get(view.topic, {}))
        config["view"] = view.declaration()
        self.hub.storage.save_topic(view.topic, config)

    async def commit(
        self, name: str, generation: object, expect: object, events: object
    ) -> dict[str, int]:
        """Append one commit to the changelog if it ends at ``expect`` and the view is at
        ``generation``: ``{"offset": first, "next": one past the last}``; else 409
        naming the changelog's ``next_offset`` and the view's ``generation``."""
        await self.ready()
        view = self.view(name)
        gen = whole(generation, "generation")
        at = whole(expect, "expect")
        async with view.lock:
            await _landed(view)
            part = self.hub.topic(view.topic).partitions[0]
            end = part.end_offset
            if gen != view.generation:
                raise Conflict(
                    f"view {name!r} is at generation {view.generation}, not {gen}: it was "
                    "rebuilt; reload it from its changelog",
                    field="generation", generation=view.generation, next_offset=end,
                )  # fmt: skip
            if at != end:
                raise Conflict(
                    f"the changelog of view {name!r} ends at offset {end}, not {at}: another "
                    "commit came first; reload it from its changelog",
                    field="expect", generation=view.generation, next_offset=end,
                )  # fmt: skip
            # Checked under the lock (the CAS holds meanwhile): a commit that lost the
            # race is told so (409) before anything about its events.
            checked = check_commit(name, gen, events, self.hub.options.max_event_bytes)
            # Once the append starts it lands whatever happens to the caller, so it is
            # applied whatever happens too: in a task of its own, which the next holder
            # of the lock waits for (applied in changelog order).
            durable = part.append(checked.payloads)  # offsets taken now
            landing = asyncio.get_running_loop().create_task(
                self._land(view, part, durable, checked.events)
            )
            view.landing = landing
            try:
                base = await asyncio.shield(landing)
            finally:
                if landing.done():  # else the caller is cancelled: the next one waits
                    view.landing = None
        return {"offset": base, "next": base + len(checked.payloads)}

    async def _land(
        self,
        view: View,
        part: PartitionStore,
        durable: Awaitable[int],
        checked: list[dict[str, Any]],
    ) -> int:
        base = await durable
        last = base + len(checked) - 1
        got = part.read(last, 1)  # the checkpoint: its append time is the commit's
        ts = got[0][1] if got and got[0][0] == last else self.hub.clock.time_ms()
        for i, event in enumerate(checked):
            view.apply(base + i, ts, event)
        view.changed()
        return base

    async def rebuild(self, name: str) -> dict[str, Any]:
        """Empty the view under the next generation: its changelog is dropped and made again."""
        await self.ready()
        view = self.view(name)
        async with view.lock:
            await _landed(view)
            await self.hub.delete_topic(view.topic)
            view.generation += 1
            view.reset()
            self.hub._open_topic(view.topic, 1, CHANGELOG_RETENTION)
            self._save(view)
            view.changed()
        return self.info(name)

    # -- serve ------------------------------------------------------------------------

    def get(self, name: str, key: str) -> tuple[Any, int]:
        """The value of ``key`` and the changelog offset of the record holding it."""
        view = self.view(name)
        found = view.values.get(key)
        if found is None:
            raise ViewNotFound(f"view {name!r} has no key {key!r}", view=name, key=key)
        return found

    def scan(
        self, name: str, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> tuple[list[tuple[str, Any, int]], str | None]:
        """Keys in order from ``prefix`` (past ``after``, the last key of the previous
        page), at most ``limit``; and the key to pass as ``after`` next (None: no more)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SCAN:
            raise BadRequest(f"limit must be from 1 to {MAX_SCAN}", field="limit")
        view = self.view(name)
        keys = view.keys
        i = bisect_left(keys, prefix) if after is None else bisect_right(keys, max(after, prefix))
        page: list[tuple[str, Any, int]] = []
        while i < len(keys) and keys[i].startswith(prefix) and len(page) < limit:
            key = keys[i]
            value, offset = view.values[key]
            page.append((key, value, offset))
            i += 1
        more = i < len(keys) and keys[i].startswith(prefix)
        return page, (page[-1][0] if more and page else None)

    def input_of(self, name: str, topic: str | None) -> str:
        """The input a ``min_position`` is about: ``topic``, or the only input."""
        view = self.view(name)
        if topic is None:
            if len(view.inputs) > 1:
                raise BadRequest(
                    f"view {name!r} has several inputs ({', '.join(view.inputs)}): "
                    "say which topic min_position is about with topic=",
                    field="topic",
                )
            return view.inputs[0]
        if topic not in view.inputs:
            raise BadRequest(
                f"topic {topic!r} is not an input of view {name!r} "
                f"(its inputs: {', '.join(view.inputs)})",
                field="topic",
            )
        return topic

    def reflects(self, name: str, topic: str, positions: dict[int, int]) -> bool:
        """Whether the view's last checkpoint covers every event of ``topic`` at or
        before ``positions`` (partition -> offset)."""
        cp = self.view(name).checkpoint
        read = cp.get("inputs", {}).get(topic, {}) if cp else {}
        return all(int(read.get(str(p), 0)) > o for p, o in positions.items())

    async def wait_for(
        self, name: str, topic: str, positions: dict[int, int], timeout: float
    ) -> bool:
        """Wait up to ``timeout`` s until :meth:`reflects`; whether it does (after the
        changelogs are read at start)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.ready(timeout)
        while not self.reflects(name, topic, positions):
            remaining = deadline - loop.time()
            if remaining <= 0 or self.hub.closing:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.view(name).pulse.wait(), remaining)
        return True

    def info(self, name: str) -> dict[str, Any]:
        return self._info(self.view(name))

    def _info(self, view: View) -> dict[str, Any]:
        cp = view.checkpoint or {}
        read: dict[str, Any] = cp.get("inputs", {}) if isinstance(cp.get("inputs"), dict) else {}
        positions: dict[str, str | None] = {}
        lag: dict[str, int | None] = {}
        for topic in view.inputs:
            t = self.hub.topics.get(topic)
            at = read.get(topic, {})
            positions[topic] = ",".join(f"{p}:{o}" for p, o in sorted(at.items())) or None
            if t is None:
                lag[topic] = None
                continue
            lag[topic] = sum(
                max(0, part.end_offset - max(int(at.get(str(p), 0)), part.start_offset))
                for p, part in enumerate(t.partitions)
            )
        log = self.hub.topics.get(view.topic)
        failed = {} if view.failed is None else {"failed": view.failed}
        return failed | {
            "name": view.name, "kind": view.kind, "inputs": list(view.inputs), "app": view.app,
            "window": view.window, "emit": view.emit, "generation": view.generation,
            "keys": len(view.values), "positions": positions, "lag": lag,
            "last_commit": view.last_commit_ms,
            "checkpoint": None if view.checkpoint_offset is None else {
                "position": f"0:{view.checkpoint_offset}", "seq": cp.get("seq"),
                "owner": cp.get("owner"), "horizon": cp.get("horizon"),
            },
            "changelog": {
                "topic": view.topic, "next_offset": log.partitions[0].end_offset if log else 0,
            },
        }  # fmt: skip

    # -- change feed ------------------------------------------------------------------

    def snapshot(self, name: str) -> tuple[int, int, list[tuple[str, Any, int]]]:
        """``(generation, offset, entries)``: every served key, sorted, as of ``offset``;
        changes from ``offset`` on follow with :meth:`changes`."""
        view = self.view(name)
        entries = [(k, *view.values[k]) for k in view.keys]
        return view.generation, view.applied, entries

    async def changes(
        self, name: str, generation: int, offset: int, limit: int = 1000, wait_s: float = 0.0
    ) -> Feed:
        """Served changes after changelog ``offset`` of ``generation`` (waiting up to
        ``wait_s`` for one); ``reset`` if the changelog is not that one any more."""
        view = self.view(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            log = self.hub.topics.get(view.topic)
            if log is None:  # dropped by a rebuild under way: a new snapshot once it is done
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(view.pulse.wait(), max(deadline - loop.time(), 0.01))
                return Feed([], view.applied, reset=True)
            part = log.partitions[0]
            if view.generation != generation or not part.start_offset <= offset <= view.applied:
                return Feed([], view.applied, reset=True)
            if offset < view.applied:
                out: list[Change] = []
                got = part.read(offset, limit)
                for o, _, payload in got:
                    if o >= view.applied:
                        break
                    change = change_of(o, orjson.loads(payload))
                    if change is not None:
                        out.append(change)
                    offset = o + 1
                if out or not got:
                    return Feed(out, offset)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or self.hub.closing:
                return Feed([], offset)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(view.pulse.wait(), remaining)
            view = self.view(name)

    def list(self) -> list[dict[str, Any]]:  # last: the name shadows the builtin below it
        """Every view's :meth:`info`, by name."""
        self._check_loaded()
        return [self._info(self.views[name]) for name in sorted(self.views)]


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
    except Exception:
        logger.exception("view %r: the append of a commit whose caller left failed", view.name)
    if view.landing is landing:
        view.landing = None
