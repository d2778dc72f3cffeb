"""One view's processor: inputs in append-time order through an operator, into the hub.

The loop (streams design, sections 1 and 3):

1. Declare the view (``put_view``: its generation) and restore: read the whole
   changelog ``__view.{name}`` from earliest, apply the ``v:``/``s:`` records in
   order and keep the last ``c`` (checkpoint). Commits are single appends, so
   this is the state exactly as of that checkpoint. A new or rebuilt view has
   an empty changelog: its inputs are read from earliest (batch is replay).
2. Read every input from the checkpoint's positions with append times; a read
   answers a horizon H (no record of those partitions not yet received was
   appended before H). The :class:`~tidings.streams.Merger` releases the
   records appended before the lowest horizon over the inputs, in the order
   ``(appended_ms, input_index, partition, offset)``, and holds the rest;
   each released record goes to ``operator.process``, then ``operator.advance(H)``.
3. Every ``commit_interval``, every ``commit_records`` records, and whenever a
   read finds nothing new (caught up: a reader waiting on the view sees it at
   once): drain the operator; publish its results to the view's topic and its late events to
   ``{name}.late`` (their ids are derived from what they are, so a retry after a
   crash stores nothing twice); then commit the changed ``v:``/``s:`` records and
   a checkpoint naming the next input offsets, as one compare-and-set append.
4. A commit answered 409 (another process committed, or ``tidings views
   rebuild`` emptied the changelog), or any failure to reach the hub, starts
   over at 1: what was not committed is redone, identically. A stop commits
   what was processed, then returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tidings.app.transport import TimedBatch, Transport
from tidings.core.positions import format_token
from tidings.errors import Conflict, NotFound, TidingsError, TooLarge
from tidings.streams import DELETED, Merger, Operator, Output

__all__ = ["ChangelogState", "StreamSpec", "ViewProcessor", "changelog_events", "load_changelog"]

logger = logging.getLogger("tidings.app")

CHANGELOG_PREFIX = "__view."
READ_LIMIT = 5000
PUBLISH_CHUNK = 500  # result events per publish
LATE_CHUNK = 10  # late events per publish: each holds an event (up to 1 MiB)
_RETRY_PAUSE_S = 0.5  # after the hub could not be reached
_RELOAD_PAUSE_S = 0.02  # after a 409: another writer (or a rebuild) came first
_FAILED_PAUSE_S = 1.0  # after a refusal or a failure of the view's own code, doubling
_HELD_PAUSE_S = 0.005  # records wait for the horizon to pass them: read again soon
# Errors worth trying again soon: the hub unreachable (500), busy, limited, unavailable.
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
_BEHIND_INTERVAL_S = 1.0  # the commit interval while reading a backlog
_GENERATION_CHECK_S = 2.0  # while idle: has the view been rebuilt?


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A registered view or window: what to declare, what to read, how to process."""

    name: str
    kind: Literal["view", "window"]
    inputs: tuple[str, ...]
    types: tuple[str, ...]
    declaration: dict[str, Any]  # what put_view sends (kind, inputs, app, window, emit)
    make_operator: Callable[[], Operator]
    commit_interval: float
    commit_records: int


@dataclass(slots=True)
class ChangelogState:
    """What a changelog holds: served values, operator state, the last checkpoint."""

    values: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None
    end: int = 0  # the changelog's end offset: a commit's `expect`


class _Reload(Exception):
    """The changelog changed under this processor: restore and go on."""


async def load_changelog(transport: Transport, name: str) -> ChangelogState:
    """Read the changelog of view ``name`` from earliest to its end (section 3)."""
    out = ChangelogState()
    start = "earliest"
    while True:
        batch = await transport.read_timed(CHANGELOG_PREFIX + name, start, READ_LIMIT, 0)
        for _, _, _, ev in batch.records:
            pk = ev.get("partitionkey")
            if not isinstance(pk, str):
                continue
            if pk == "c":
                out.checkpoint = ev.get("data")
            elif pk.startswith("v:"):
                _apply(out.values, pk[2:], ev)
            elif pk.startswith("s:"):
                _apply(out.state, pk[2:], ev)
        out.end = batch.next.get(0, out.end)
        if not batch.records:
            return out
        start = format_token(batch.next)


def _apply(into: dict[str, Any], key: str, ev: dict[str, Any]) -> None:
    data = ev.get("data")
    if isinstance(data, dict) and "value" in data:
        into[key] = data["value"]
    else:  # a tombstone
        into.pop(key, None)


def changelog_events(
    name: str, generation: int, seq: int, out: Output, checkpoint: dict[str, Any]
) -> list[dict[str, Any]]:
    """One commit's records: changed values, changed state, then the checkpoint."""
    source = f"tidings/views/{name}"
    events: list[dict[str, Any]] = []

    def add(pk: str, etype: str, data: Any) -> None:
        ev: dict[str, Any] = {
            "specversion": "1.0",
            "id": f"{name}.{generation}.{seq}.{len(events)}",
            "source": source,
            "type": etype,
            "partitionkey": pk,
        }
        if data is not DELETED:
            ev["data"] = data
        events.append(ev)

    for key, value in out.values.items():
        add("v:" + key, "tidings.view.value", value if value is DELETED else {"value": value})
    for key, value in out.state.items():
        add("s:" + key, "tidings.view.value", value if value is DELETED else {"value": value})
    add("c", "tidings.view.checkpoint", checkpoint)
    return events


class ViewProcessor:
    """Runs one :class:`StreamSpec` against a transport until :meth:`stop`."""

    def __init__(self, app_name: str, spec: StreamSpec, transport: Transport, *,
                 poll_wait: float = 1.0) -> None:
        self.app_name = app_name
        self.spec = spec
        self.transport = transport
        self.poll_wait = poll_wait
        self.owner = f"{app_name}@{socket.gethostname()}:{os.getpid()}"
        self._stopping = False
        self._wake = asyncio.Event()
        self.generation = -1
        self.commits = 0
        self.reloads = 0
        self.failures = 0
        #: Records per commit at most: commit_records, halved after a commit too large.
        self.commit_records = spec.commit_records
        self.processed = 0  # input records processed since start (redone ones too)
        #: The input positions of the last checkpoint read or written.
        self.committed: dict[str, dict[str, int]] = {}
        #: The horizon up to which what the operator produced is committed.
        self.settled_horizon: int | None = None

    def stop(self) -> None:
        """Stop reading; what was processed is committed, then :meth:`run` returns."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        name = self.spec.name
        while not self._stopping:
            try:
                await self._session()
            except (_Reload, Conflict) as exc:
                self.reloads += 1
                logger.info("view %s: %s; reloading from the changelog", name, _why(exc),
                            extra={"view": name})
                await self._pause(_RELOAD_PAUSE_S)
            except TooLarge as exc:
                # A commit (or a publish of its results) over the hub's request limit:
                # redo the work since the checkpoint in smaller commits.
                if self.commit_records == 1:  # one record's changes: no smaller commit
                    await self._failed(f"the hub refused: {exc.detail}")
                    continue
                self.commit_records = max(1, self.commit_records // 2)
                logger.warning("view %s: %s; committing every %d records from now on",
                               name, exc.detail, self.commit_records, extra={"view": name})
            except TidingsError as exc:
                if exc.status in _TRANSIENT:
                    logger.warning("view %s: %s; retrying", name, exc.detail,
                                   extra={"view": name})
                    await self._pause(_RETRY_PAUSE_S)
                else:  # refused (403, 400): again at once would be refused again
                    await self._failed(f"the hub refused: {exc.detail}")
            except Exception:
                # A fold, key or aggregation that raises: skipping the event would make
                # the view wrong for good, so the view stops here (and says why) and
                # tries again from its last checkpoint, e.g. after a fixed deploy.
                await self._failed("its code raised", trace=True)

    async def _failed(self, why: str, *, trace: bool = False) -> None:
        self.failures += 1
        pause = min(_FAILED_PAUSE_S * 2 ** min(self.failures - 1, 6), 60.0)
        name = self.spec.name
        logger.error("view %s failed (%s); retrying from its last checkpoint in %gs",
                     name, why, pause, exc_info=trace, extra={"view": name})
        await self._pause(pause)

    async def caught_up(self, now_ms: int | None = None) -> bool:
        """Whether the last checkpoint covers every record of the inputs now and, with
        ``now_ms``, what the horizon reaching that time closed is committed too."""
        if now_ms is not None and (self.settled_horizon is None or self.settled_horizon < now_ms):
            return False
        for topic in self.spec.inputs:
            at = self.committed.get(topic, {})
            ends = await self.transport.end_positions(topic)
            if any(at.get(str(p), 0) < o for p, o in ends.items() if o > 0):
                return False
        return True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # -- one session: restore, then process until a reload or a stop ---------------------

    async def _session(self) -> None:
        spec, t = self.spec, self.transport
        info = await t.put_view(spec.name, spec.declaration)
        generation = int(info["generation"])
        self.generation = generation
        loaded = await load_changelog(t, spec.name)
        ckpt = loaded.checkpoint or {}
        if ckpt and int(ckpt.get("generation", -1)) != generation:
            raise _Reload(f"the changelog is of generation {ckpt.get('generation')}")
        op = spec.make_operator()
        op.restore(loaded.values, loaded.state, dict(ckpt.get("clock") or {}))
        run = _Run(self, op, generation, loaded.end, int(ckpt.get("seq", -1)) + 1, ckpt)
        await run.loop()


class _Run:
    """The state of one session of a processor (see the module docstring)."""

    def __init__(self, proc: ViewProcessor, op: Operator, generation: int, expect: int,
                 seq: int, ckpt: dict[str, Any]) -> None:
        self.proc = proc
        self.spec = proc.spec
        self.t = proc.transport
        self.op = op
        self.generation = generation
        self.expect = expect
        self.seq = seq
        saved: dict[str, dict[str, int]] = dict(ckpt.get("inputs") or {})
        # Where each input's next read starts (None: earliest, nothing read yet).
        self.read_at: list[dict[int, int] | None] = [
            {int(p): int(o) for p, o in saved[topic].items()} if topic in saved else None
            for topic in self.spec.inputs
        ]
        self.merger = Merger(len(self.spec.inputs))
        self.horizon: int | None = ckpt.get("horizon")
        self.committed = proc.committed = self.positions()
        self.uncommitted = 0
        self.advanced = False
        self.last_generation_check = 0.0

    def positions(self) -> dict[str, dict[str, int]]:
        """The next offset per input partition below which every record is processed."""
        out: dict[str, dict[str, int]] = {}
        for i, topic in enumerate(self.spec.inputs):
            at = self.read_at[i]
            if at is None:
                continue
            first = self.merger.first_held
            out[topic] = {
                str(p): (o if (held := first(i, p)) is None else held)
                for p, o in sorted(at.items())
            }
        return out

    async def loop(self) -> None:
        proc, spec = self.proc, self.spec
        loop = asyncio.get_running_loop()
        interval = spec.commit_interval
        last_commit = loop.time()
        idle_rounds = 0
        while not proc._stopping:
            wait = 0.0
            if self.merger.holding():
                await proc._pause(_HELD_PAUSE_S)
            elif idle_rounds and self.uncommitted == 0:
                wait = proc.poll_wait
            got = await self._read_round(wait)
            ready = self._take(got)
            idle_rounds = 0 if ready or any(b.records for _, b in got) else idle_rounds + 1
            # Behind (a read came back full): a backlog or a replay; checkpoints every
            # second or commit_records records are enough, and cost less.
            behind = any(len(b.records) >= self.read_limit() for _, b in got)
            every = max(interval, _BEHIND_INTERVAL_S) if behind else interval
            due = loop.time() - last_commit >= every
            # Caught up (a read found nothing new, nothing waits for the horizon): commit
            # now, so that a reader waiting with min_position does not wait an interval.
            caught_up = idle_rounds > 0 and not self.merger.holding()
            if self.uncommitted >= proc.commit_records or (
                (due or caught_up) and (self.uncommitted or self.advanced)
            ):
                await self.commit()
                last_commit = loop.time()
            if idle_rounds and self.uncommitted == 0:
                await self._check_generation(loop.time())
        await self.commit()

    def read_limit(self) -> int:
        """Records per read: a round's records go in one commit at most."""
        return min(READ_LIMIT, self.proc.commit_records)

    async def _read_round(self, wait: float) -> list[tuple[int, TimedBatch]]:
        """Read every input once; with ``wait``, until the first answers (or a stop)."""
        t, spec = self.t, self.spec
        tasks: dict[asyncio.Task[TimedBatch], int] = {}
        for i, topic in enumerate(spec.inputs):
            at = self.read_at[i]
            start = "earliest" if at is None else format_token(at)
            coro = t.read_timed(topic, start, self.read_limit(), wait, spec.types)
            tasks[asyncio.ensure_future(coro)] = i
        waits: set[asyncio.Future[Any]] = set(tasks)
        stop: asyncio.Task[Any] | None = None
        if wait > 0:
            stop = asyncio.ensure_future(self.proc._wake.wait())
            waits.add(stop)
        try:
            if wait > 0:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.wait(waits)
        finally:
            for w in waits:
                if not w.done():
                    w.cancel()
        out: list[tuple[int, TimedBatch]] = []
        for task, i in tasks.items():
            if task.done() and not task.cancelled():
                out.append((i, task.result()))  # raises what the read raised
        return out

    def _take(self, got: list[tuple[int, TimedBatch]]) -> int:
        """Hand what was read to the merger; process what it releases; advance."""
        merger = self.merger
        for i, batch in got:
            merger.add(i, [(i, p, o, ms, ev) for p, o, ms, ev in batch.records], batch.horizon)
            at = self.read_at[i]
            self.read_at[i] = {**(at or {}), **batch.next}
        ready = merger.ready()
        if ready:
            self.op.process_all(ready)
        h = merger.horizon
        if h is not None and (self.horizon is None or h > self.horizon):
            self.horizon = h
            self.op.advance(h)
            self.advanced = True  # it may have closed windows
        self.uncommitted += len(ready)
        self.proc.processed += len(ready)
        return len(ready)

    async def _check_generation(self, now: float) -> None:
        """While idle, notice a rebuild (which no commit of ours would meet)."""
        if now - self.last_generation_check < _GENERATION_CHECK_S:
            return
        self.last_generation_check = now
        try:
            info = await self.t.view_info(self.spec.name)
        except NotFound as exc:
            raise _Reload("the view is gone") from exc
        if int(info.get("generation", self.generation)) != self.generation:
            raise _Reload(f"the view is now of generation {info['generation']}")

    async def commit(self) -> None:
        """Publish what the operator produced, then commit its changes and a checkpoint."""
        spec, t = self.spec, self.t
        out = self.op.drain()
        self.advanced = False
        horizon = self.horizon
        positions = self.positions()
        if not (out.values or out.state or out.results or out.late) and (
            positions == self.committed
        ):
            self.uncommitted = 0
            self.proc.settled_horizon = horizon
            return
        for topic, events, chunk in (
            (spec.name, out.results, PUBLISH_CHUNK),
            (spec.name + ".late", out.late, LATE_CHUNK),
        ):
            for i in range(0, len(events), chunk):
                await t.publish(topic, events[i : i + chunk])
        checkpoint = {
            "generation": self.generation,
            "seq": self.seq,
            "owner": self.proc.owner,
            "inputs": positions,
            "horizon": horizon,
            "clock": out.clock,
        }
        events = changelog_events(spec.name, self.generation, self.seq, out, checkpoint)
        self.expect = await t.commit_view(spec.name, self.generation, self.expect, events)
        self.seq += 1
        self.committed = self.proc.committed = positions
        self.proc.settled_horizon = horizon
        self.proc.failures = 0
        self.uncommitted = 0
        self.proc.commits += 1


def _why(exc: BaseException) -> str:
    if isinstance(exc, TidingsError):
        return exc.detail
    return str(exc)
