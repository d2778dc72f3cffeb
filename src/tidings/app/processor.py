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

A view runs as tasks. A view that is not ``partitioned`` is one task: it reads
every partition of its inputs and commits to changelog partition 0; every
process of the app runs it and the compare and set lets one commit at a time. A
``partitioned`` view has a task per input partition p: it reads partition p of
every input and commits to changelog partition p, with its own checkpoint and
its own clock (the watermark is per task, as Kafka Streams' stream time is), so
what it computes does not depend on which process runs it. The processes share
the tasks through the hub (:mod:`tidings.core.viewmembers`): each heartbeats on
the view and runs the tasks the hub answers, starting and stopping them as the
answer changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from tidings.app.changelog import (
    READ_LIMIT,
    ChangelogState,
    changelog_events,
    load_changelog,
)
from tidings.app.transport import TimedBatch, Transport
from tidings.core.positions import format_token
from tidings.core.viewrecords import by_key_topic
from tidings.core.viewrouting import original
from tidings.errors import Conflict, NotFound, TidingsError, TooLarge
from tidings.streams import Merger, Operator

__all__ = [
    "ChangelogState", "StreamSpec", "TaskRunner", "ViewProcessor", "changelog_events",
    "load_changelog",
]

logger = logging.getLogger("tidings.app")

PUBLISH_CHUNK = 500  # result events per publish
LATE_CHUNK = 10  # late events per publish: each holds an event (up to 1 MiB)
_RETRY_PAUSE_S = 0.5  # after the hub could not be reached
_RELOAD_PAUSE_S = 0.02  # after a 409: another writer (or a rebuild) came first
_FAILED_PAUSE_S = 1.0  # after a refusal or a failure of the view's own code, doubling
_HELD_PAUSE_S = 0.005  # records wait for the horizon to pass them: read again soon
# While events flow (and no read comes back full), a round of reads starts at most this
# often: each read then brings the events of a few ms, rather than one read of every
# input per event (a view with five inputs read five topics for each event).
_ROUND_INTERVAL_S = 0.05
# Errors worth trying again soon: the hub unreachable (500), busy, limited, unavailable.
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
_BEHIND_INTERVAL_S = 1.0  # the commit interval while reading a backlog
_GENERATION_CHECK_S = 2.0  # while idle: has the view been rebuilt?
_HEARTBEAT_S = 1.0  # a member's heartbeat, unless the hub asks for another


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
    partitioned: bool = False  # a task per input partition (the key is the partitionkey)
    #: A repartitioned view: the view's key, which its routing tasks key copies by
    #: (:mod:`tidings.app.repartition`); None for a view read as it is.
    route_key: Callable[[Any], Any] | None = None

    @property
    def shared(self) -> bool:
        """Whether the view runs as tasks the app's processes share."""
        return self.partitioned or self.route_key is not None


class _Reload(Exception):
    """The changelog changed under this processor: restore and go on."""


class ViewProcessor:
    """Runs one :class:`StreamSpec` against a transport until :meth:`stop`: its one
    task, or, for a partitioned view, the tasks the hub gives this process."""

    def __init__(self, app_name: str, spec: StreamSpec, transport: Transport, *,
                 poll_wait: float = 1.0) -> None:
        self.app_name = app_name
        self.spec = spec
        #: What the view's tasks read: the inputs, or for a repartitioned view (whose
        #: routing tasks read the inputs) its repartition topic, every type.
        self.task_spec = spec if spec.route_key is None else replace(
            spec, inputs=(by_key_topic(spec.name),), types=()
        )
        self.transport = transport
        self.poll_wait = poll_wait
        # Unique per processor: two apps in one process are two members.
        self.owner = f"{app_name}@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._stopping = False
        self._wake = asyncio.Event()
        # Set once the hub took the view's declaration (reads of it wait for that).
        self.declared = asyncio.Event()
        self.generation = -1
        self.commits = 0
        self.reloads = 0
        self.processed = 0  # input records processed since start (redone ones too)
        #: The tasks running here, by task number (one, task 0, for a view not partitioned).
        self.runners: dict[int, TaskRunner] = {}
        self._ending: set[asyncio.Future[None]] = set()  # runners of tasks that moved
        self.heartbeats = 0

    @property
    def committed(self) -> dict[str, dict[str, int]]:
        """The input positions of the running tasks' last checkpoints, read or written."""
        out: dict[str, dict[str, int]] = {}
        for runner in self.runners.values():
            for topic, at in runner.committed.items():
                out.setdefault(topic, {}).update(at)
        return out

    @property
    def settled_horizon(self) -> int | None:
        """The horizon up to which what every running task produced is committed."""
        got = [r.settled_horizon for r in self.runners.values()]
        if not got or None in got:
            return None
        return min(h for h in got if h is not None)

    @property
    def commit_records(self) -> int:
        """Records per commit at most, the least of the running tasks'."""
        return min((r.commit_records for r in self.runners.values()),
                   default=self.spec.commit_records)

    @property
    def failures(self) -> int:
        return sum(r.failures for r in self.runners.values())

    def stop(self) -> None:
        """Stop reading; what was processed is committed, then :meth:`run` returns."""
        self._stopping = True
        self._wake.set()
        for runner in self.runners.values():
            runner.stop()

    async def run(self) -> None:
        if not self.spec.shared:
            runner = self.runners[0] = TaskRunner(self, None)
            await runner.run()
            return
        try:
            await self._share()
        finally:
            for runner in self.runners.values():
                runner.stop()
            running = [r.done for r in self.runners.values() if r.done is not None]
            await asyncio.gather(*running, *self._ending, return_exceptions=True)

    async def _share(self) -> None:
        """Heartbeat on the view and run the tasks the hub gives this process."""
        name, t = self.spec.name, self.transport
        every = _HEARTBEAT_S
        declared = False
        while not self._stopping:
            try:
                if not declared:
                    await t.put_view(name, self.spec.declaration)
                    declared = True
                    self.declared.set()
                answer = await t.view_members(name, self.owner)
            except TidingsError as exc:
                if exc.status in _TRANSIENT:
                    logger.warning("view %s: %s; retrying", name, exc.detail,
                                   extra={"view": name})
                    await self._pause(_RETRY_PAUSE_S)
                else:
                    logger.error("view %s: the hub refused: %s", name, exc.detail,
                                 extra={"view": name})
                    declared = False
                    await self._pause(_FAILED_PAUSE_S * 5)
                continue
            except Exception:
                logger.exception("view %s: heartbeat failed; retrying", name,
                                 extra={"view": name})
                await self._pause(_RETRY_PAUSE_S)
                continue
            self.heartbeats += 1
            every = max(0.05, int(answer.get("heartbeat_ms", 1000)) / 1000)
            mine = {int(p) for p in answer.get("tasks", [])}
            for task, runner in list(self.runners.items()):
                if runner.done is not None and runner.done.done():
                    del self.runners[task]  # ended (its task moved, or the layout changed)
            for task in sorted(set(self.runners) - mine):
                logger.info("view %s: task %d moved to another process", name, task,
                            extra={"view": name})
                ending = self.runners.pop(task)
                ending.stop()
                if ending.done is not None:
                    self._ending.add(ending.done)
                    ending.done.add_done_callback(self._ending.discard)
            stage2 = int((answer.get("repartition") or {}).get("partitions", 0))
            for task in sorted(mine - set(self.runners)):
                runner = self.runners[task] = (
                    TaskRunner(self, task) if not stage2 or task < stage2
                    else _router(self, task)
                )
                runner.done = asyncio.ensure_future(runner.run())
            await self._pause(every)
        # Stopping: the tasks commit what they processed, then the process leaves, so
        # that its tasks go to the others at once.
        for runner in self.runners.values():
            runner.stop()
        running = [r.done for r in self.runners.values() if r.done is not None]
        await asyncio.gather(*running, *self._ending, return_exceptions=True)
        with contextlib.suppress(TidingsError, OSError):
            await t.view_members(name, self.owner, leave=True)

    async def caught_up(self, now_ms: int | None = None) -> bool:
        """Whether the last checkpoints cover every record of the inputs now and, with
        ``now_ms``, what the horizon reaching that time closed is committed too."""
        if now_ms is not None and (self.settled_horizon is None or self.settled_horizon < now_ms):
            return False
        committed = self.committed
        both = {*self.spec.inputs, *self.task_spec.inputs}  # a repartitioned view's stages
        for topic in sorted(both):
            at = committed.get(topic, {})
            ends = await self.transport.end_positions(topic)
            if any(at.get(str(p), 0) < o for p, o in ends.items() if o > 0):
                return False
        return True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)


class TaskRunner:
    """One task of a view (``task`` None: the only task of a view not partitioned,
    which reads every input partition): sessions until stopped."""

    def __init__(self, processor: ViewProcessor, task: int | None) -> None:
        self.processor = processor
        self.task = task
        self.spec = processor.task_spec
        self.transport = processor.transport
        self.poll_wait = processor.poll_wait
        self.owner = processor.owner
        self._stopping = False
        self._wake = asyncio.Event()
        self.failures = 0
        #: Records per commit at most: commit_records, halved after a commit too large.
        self.commit_records = self.spec.commit_records
        #: The input positions of the last checkpoint read or written.
        self.committed: dict[str, dict[str, int]] = {}
        #: The horizon up to which what the operator produced is committed.
        self.settled_horizon: int | None = None
        self.done: asyncio.Future[None] | None = None

    @property
    def partition(self) -> int:
        """The changelog partition this task commits to."""
        return self.task or 0

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        name = self.spec.name
        while not self._stopping:
            try:
                await self._session()
            except _Gone as exc:
                logger.info("view %s: %s", name, exc, extra={"view": name})
                return
            except _Refused as exc:
                await self._failed(f"the hub refused its declaration: {exc}")
            except (_Reload, Conflict) as exc:
                self.processor.reloads += 1
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

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # -- one session: restore, then process until a reload or a stop ---------------------

    async def _session(self) -> None:
        spec, t = self.spec, self.transport
        try:
            info = await t.put_view(spec.name, spec.declaration)
        except Conflict as exc:  # declared otherwise (e.g. another layout): not a race
            raise _Refused(exc.detail) from exc
        self.processor.declared.set()
        generation = int(info["generation"])
        tasks = int(info.get("tasks", 1))
        if spec.route_key is not None:  # its tasks past these route
            tasks = int((info.get("repartition") or {}).get("partitions", 0))
        if self.task is not None and self.task >= tasks:
            raise _Gone(f"task {self.task} is no more (the view has {tasks})")
        self.processor.generation = generation
        loaded = await load_changelog(t, spec.name, self.partition)
        ckpt = loaded.checkpoint or {}
        if ckpt and int(ckpt.get("generation", -1)) != generation:
            raise _Reload(f"the changelog is of generation {ckpt.get('generation')}")
        op = spec.make_operator()
        op.restore(loaded.values, loaded.state, dict(ckpt.get("clock") or {}))
        run = _Run(self, op, generation, loaded.end, int(ckpt.get("seq", -1)) + 1, ckpt)
        await run.loop()


class _Refused(Exception):
    """The hub refused the view's declaration (409: declared otherwise there)."""


class _Gone(Exception):
    """This task is not the view's any more (its layout changed): the runner ends."""


class _Run:
    """The state of one session of a processor (see the module docstring)."""

    def __init__(self, proc: TaskRunner, op: Operator, generation: int, expect: int,
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
        self.partition = proc.task  # the input partition it reads (None: every one)
        # A repartitioned view's inputs (its task reads their copies), else None.
        self.routed_from = proc.processor.spec.inputs if self.spec.route_key else None
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
        behind = False
        round_started = -_ROUND_INTERVAL_S
        while not proc._stopping:
            wait = 0.0
            holding = self.merger.holding()
            if not holding and idle_rounds and self.uncommitted == 0:
                wait = proc.poll_wait
            else:  # events flow: a round at most every _ROUND_INTERVAL_S, unless behind
                pause = 0.0 if behind else round_started + _ROUND_INTERVAL_S - loop.time()
                if holding:
                    pause = max(pause, _HELD_PAUSE_S)
                if pause > 0:
                    await proc._pause(pause)
            round_started = loop.time()
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
            coro = t.read_timed(topic, start, self.read_limit(), wait, spec.types,
                                self.partition)
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
        if ready and self.routed_from is not None:  # copies: the original events
            ready = [original(rec, self.routed_from) for rec in ready]
        if ready:
            self.op.process_all(ready)
        h = merger.horizon
        if h is not None and (self.horizon is None or h > self.horizon):
            self.horizon = h
            self.op.advance(h)
            self.advanced = True  # it may have closed windows
        self.uncommitted += len(ready)
        self.proc.processor.processed += len(ready)
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
        task = self.proc.partition
        events = changelog_events(spec.name, self.generation, self.seq, out, checkpoint, task)
        self.expect = await t.commit_view(spec.name, self.generation, self.expect, events, task)
        self.seq += 1
        self.committed = self.proc.committed = positions
        self.proc.settled_horizon = horizon
        self.proc.failures = 0
        self.uncommitted = 0
        self.proc.processor.commits += 1


def _router(processor: ViewProcessor, task: int) -> TaskRunner:
    from tidings.app.repartition import RouterRunner  # it builds on TaskRunner

    return RouterRunner(processor, task)


def _why(exc: BaseException) -> str:
    if isinstance(exc, TidingsError):
        return exc.detail
    return str(exc)
