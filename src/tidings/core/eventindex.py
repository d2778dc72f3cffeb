"""The event index: a record by its event id, an order's records by correlationid.

The index follows the log as a cursor: one task takes each partition from the
offset it has indexed up to, a few thousand records a round, and a worker thread
stores a row per record (the hash of its id, the hash of its correlationid, its
position and append time), or one for a batch of ids the hub made (a run, see
:mod:`tidings.core.indexrows`), with each partition's new offset, as one change, in an
:class:`~tidings.core.storage.IndexStore`. Most records are not read back for it:
a publish whose append is acknowledged leaves a :class:`~tidings.core.indexrows.Hint`
(:meth:`EventIndex.hint`) of the ids and correlationids it had checked, and a round
takes a partition's hinted runs where they start at its offset and reads back only
the records between them (other appenders, a restart, hints past the cap). So a
publish does no index work on its own path beyond leaving its hint; the index
trails the log by a round (tens of milliseconds), and a lookup
first waits, a bounded time (``SETTLE_S``), for every record acknowledged before it
to be indexed. A publish load faster than the index can take in (a few tens of
thousands of events a second) makes it trail further; a lookup that cannot be
answered whole then is refused (503, try again), never answered in part.

After a crash the index goes on from the offsets it stored with its last rows: it
may trail the log, never skip a record. Rows are hints: a lookup reads each record
a row points at and checks its full id or correlationid, so a row whose record is
gone (retention, a deleted topic, a tail lost to a power cut) or is another
record (a hash collision, an offset reused after a power cut) is never answered.
Rows below a partition's first offset, or past its end, are trimmed as the task
meets them; a deleted topic's rows are forgotten before its files go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from tidings.core.indexrows import Chunk, Hint, key_hash, rows_of, run_key
from tidings.core.skipping import read_past_damage
from tidings.core.storage import IndexStore, PartitionStore
from tidings.errors import BadRequest, OffsetOutOfRange, ServerBusy, StorageUnavailable

if TYPE_CHECKING:
    from tidings.core.hub import Topic

logger = logging.getLogger("tidings.index")

ROUND_RECORDS = 20_000  # records read per round, over all partitions
IDLE_S = 0.05  # how often a caught-up index looks for new records (a lookup wakes it at once)
YIELD = 2.0  # under a publish load, the index rests this many times as long as it works
PRUNE_S = 30.0  # how often the index lets go of rows that retention made useless
SETTLE_S = 2.0  # how long a lookup waits for the records acknowledged before it
MAX_LIMIT = 1000  # records per page of a correlation lookup
READ_SPAN = 1000  # offsets of one partition this close are read in one go
MAX_ID_MATCHES = 100  # records sharing one id (a dead letter keeps its id, a re-drive too)
HINT_EVENTS = 200_000  # events of publish hints kept at most; past it records are read back

_T = TypeVar("_T")
Position = tuple[str, int, int]  # topic, partition, offset


@dataclass(frozen=True, slots=True)
class Found:
    """A record the index found, read from the log and checked."""

    topic: str
    partition: int
    offset: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Page:
    """One page of an order's records, and the cursor of the next (None at the end)."""

    records: list[Found]
    next: str | None


def parse_cursor(raw: str | None) -> tuple[int, int] | None:
    """``after=`` as a page's ``next`` gave it: ``<time>-<seq>``."""
    if raw is None:
        return None
    ts, sep, seq = raw.partition("-")
    if sep and all(p.isascii() and p.isdigit() and len(p) <= 18 for p in (ts, seq)):
        return int(ts), int(seq)
    raise BadRequest("after must be the next of a previous page", field="after")


class EventIndex:
    """Follows every partition of ``topics`` (the hub's own dict) into ``store``."""

    def __init__(
        self, store: IndexStore, topics: dict[str, Topic], hint_events: int = HINT_EVENTS
    ) -> None:
        self.store = store
        self.hint_events = hint_events  # hinted events kept waiting at most (see hint())
        self._topics = topics
        # One writer thread (rows go in in order), one reader (lookups never queue
        # behind a write).
        self._writer = ThreadPoolExecutor(1, "tidings-index-write")
        self._reader = ThreadPoolExecutor(1, "tidings-index-read")
        self._indexed: dict[tuple[str, int], int] = {}  # next offset to index
        self._trimmed: dict[tuple[str, int], int] = {}  # rows below this are gone
        self._forgetting: set[str] = set()  # deleted topics whose rows are still there
        self._lock = asyncio.Lock()  # a round, or a forget: never both
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._turn = 0
        self._pruned_at = -PRUNE_S
        self._prune_due = False  # retention moved a start, or a topic went, since the last
        self.failure: str | None = None  # why the last round failed, while it does
        self.indexed_total = 0  # records indexed since start
        self.read_back_total = 0  # of which read back from the log, not from a hint
        self._loaded = False  # the store answered load()
        # What publishes appended, by partition and base offset (see hint()).
        self._hints: dict[tuple[str, int], dict[int, Hint]] = {}
        self._hinted = 0  # events in _hints
        self._last_ts: dict[tuple[str, int], int] = {}  # time of the last row made
        # Each partition's end at the previous round: only records there by then are
        # read back (a publish acknowledged since may not have left its hint yet).
        self._seen_end: dict[tuple[str, int], int] = {}

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    # -- life --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load where each partition was indexed up to, and follow the log from there.

        An index that cannot be opened (a full disk) does not stop the hub: it is
        tried again every round, and lookups answer 503 meanwhile.
        """
        await self._load()
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _load(self) -> None:
        try:
            self._indexed = await self._run(self._writer, self.store.load)
        except Exception as exc:
            if self.failure is None:
                logger.error("event index not opened, tried again: %s", exc)
            self.failure = str(exc) or type(exc).__name__
            return
        self._loaded = True
        self._forgetting |= {t for t, _ in self._indexed} - set(self._topics)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        async with self._lock:  # a write in its thread finishes first
            await self._run(self._writer, self.store.close)
        self._writer.shutdown(wait=False)
        self._reader.shutdown(wait=False)

    def _appended(self) -> int:
        """Records appended so far, over every partition (offsets only grow)."""
        return sum(p.end_offset for t in self._topics.values() for p in t.partitions)

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        appended = self._appended()
        while True:
            try:
                started = loop.time()
                more = await self._round()
                self.failure = None
                if more:
                    # Behind while publishes keep coming: the hub is busy ingesting, and
                    # the index takes at most 1 / (1 + YIELD) of the time, trailing the
                    # log until the load eases (lookups wait or answer 503 meanwhile).
                    # Behind with nothing new coming (a restart, a burst that ended):
                    # catch up at full speed.
                    now_appended = self._appended()
                    if now_appended != appended:
                        await asyncio.sleep((loop.time() - started) * YIELD)
                    appended = now_appended
            except StorageUnavailable as exc:  # a full disk: try again, the log is the truth
                if self.failure is None:
                    logger.warning("event index: %s; trying again until it heals", exc)
                self.failure = str(exc)
                more = False
                await asyncio.sleep(0.5)
            except Exception as exc:  # anything else is a fault of ours: said in full, once
                if self.failure is None:
                    logger.exception("event index: round failed")
                self.failure = str(exc) or type(exc).__name__
                more = False
                await asyncio.sleep(0.5)
            if not more:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_S)
                self._wake.clear()

    async def _round(self) -> bool:
        """Index what is new in every partition, up to ``ROUND_RECORDS``; True if more waits."""
        async with self._lock:
            if not self._loaded:
                await self._load()
                if not self._loaded:
                    raise StorageUnavailable(f"event index not opened: {self.failure}")
            for topic in list(self._forgetting):
                await self._run(self._writer, self.store.forget, topic)
                self._forgetting.discard(topic)
                self._prune_due = True
            now = asyncio.get_running_loop().time()
            if self._prune_due and now - self._pruned_at >= PRUNE_S:
                self._pruned_at = now
                self._prune_due = False
                starts = {
                    (name, p): part.start_offset
                    for name, t in self._topics.items()
                    for p, part in enumerate(t.partitions)
                }
                await self._run(self._writer, self.store.prune, starts)
            for key in [k for k in self._hints if k[0] not in self._topics]:
                # An append that settled after its topic was deleted.
                self._hinted -= sum(len(h.ids) for h in self._hints.pop(key).values())
            parts: list[tuple[str, int, int, list[Chunk], int, int]] = []
            trims: list[tuple[str, int, int, int]] = []
            keys = [
                (name, p, part)
                for name, topic in self._topics.items()
                for p, part in enumerate(topic.partitions)
            ]
            if keys:
                self._turn = (self._turn + 1) % len(keys)
                keys = keys[self._turn :] + keys[: self._turn]  # no partition starves
            budget = ROUND_RECORDS
            for name, p, part in keys:
                if budget <= 0:
                    break
                got = await self._take(name, p, part, budget, trims)
                if got is not None:
                    parts.append(got)
                    budget -= max(1, got[4])
            if not parts and not trims:
                return False
            await self._run(self._writer, self._write, parts, trims)
            for name, p, nxt, _, count, read in parts:
                self._indexed[(name, p)] = nxt
                self.indexed_total += count
                self.read_back_total += read
            for name, p, start, end in trims:
                self._trimmed[(name, p)] = start
                self._indexed[(name, p)] = min(max(self._indexed.get((name, p), start), start), end)
            self._prune_due |= bool(trims)
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()
        return budget <= 0

    def hint(self, base: int, hint: Hint) -> None:
        """What a publish appended at ``base`` of a partition, now acknowledged: the
        index makes those rows from it and reads none of them back. Called on the loop,
        in the append's callback; a round takes a hint only where the partition's
        records are still the ones it names (its ``part``, its offsets before the end).
        Past ``hint_events`` waiting, hints are dropped and the records read back."""
        if self._hinted + len(hint.ids) > self.hint_events:
            return
        key = (hint.topic, hint.partition)
        hints = self._hints.get(key)
        if hints is None:
            hints = self._hints[key] = {}
        old = hints.get(base)
        if old is not None:
            self._hinted -= len(old.ids)
        hints[base] = hint
        self._hinted += len(hint.ids)

    async def _take(
        self,
        name: str,
        p: int,
        part: PartitionStore,
        budget: int,
        trims: list[tuple[str, int, int, int]],
    ) -> tuple[str, int, int, list[Chunk], int, int] | None:
        """What to index of one partition now, from where it was left: runs of records
        a publish hinted, and records read back between them."""
        key = (name, p)
        start, end = part.start_offset, part.end_offset
        pos = self._indexed.get(key)
        if pos is not None and (pos > end or self._trimmed.get(key, -1) < start):
            # Retention moved the start (or this is the first look since start-up), or
            # the log ends before the index (a tail lost to a power cut): drop the rows
            # that point outside the log.
            trims.append((name, p, start, end))
            pos = min(max(pos, start), end)
        elif pos is None or pos < start:
            pos = start
        first = pos
        hints = self._hints.get(key)
        last_ts = self._last_ts.get(key, 0)
        seen = self._seen_end.get(key)
        self._seen_end[key] = end
        chunks: list[Chunk] = []
        count = read = 0
        while pos < end and count < budget:
            # The settling callback of an append acknowledged since the last round may
            # not have run yet: its records wait a round for its hint, not read back.
            upto = end if seen is None else min(end, seen)
            if hints:
                hint = hints.pop(pos, None)
                if hint is not None:
                    n = len(hint.ids)
                    if hint.part is part and pos + n <= end:
                        self._hinted -= n
                        last_ts = max(last_ts, hint.ts)
                        chunks.append((pos, last_ts, hint))
                        pos += n
                        count += n
                        continue
                    if hint.part is part:  # not readable yet: kept for a later round
                        hints[pos] = hint
                        break
                    self._hinted -= n  # a deleted topic's partition: never taken
                upto = min(upto, min((b for b in hints if b > pos), default=end))
            if upto <= pos:
                break
            try:
                got, nxt, _ = await read_past_damage(part, p, pos, min(budget - count, upto - pos))
            except (OffsetOutOfRange, StorageUnavailable):
                break  # closing, or failed: the next round tries again
            if nxt == pos:
                break
            if got:
                last_ts = max(last_ts, got[-1][1])
                chunks.append(got)
                count += len(got)
                read += len(got)
            pos = nxt
        self._last_ts[key] = last_ts
        if hints:
            for stale in [b for b in hints if b < pos]:  # read back instead
                self._hinted -= len(hints.pop(stale).ids)
        if pos == first and self._indexed.get(key) == pos:
            return None
        return name, p, pos, chunks, count, read

    def _write(
        self,
        parts: list[tuple[str, int, int, list[Chunk], int, int]],
        trims: list[tuple[str, int, int, int]],
    ) -> None:
        for trim in trims:
            self.store.trim(*trim)
        self.store.add([(name, p, nxt, *rows_of(chunks)) for name, p, nxt, chunks, *_ in parts])

    async def forget(self, topic: str) -> None:
        """Drop a deleted topic's rows (before its files go: a crash in between
        re-indexes it, never leaves rows for a new topic of that name)."""
        async with self._lock:
            for key in [k for k in self._indexed if k[0] == topic]:
                del self._indexed[key]
                self._trimmed.pop(key, None)
            for key in [k for k in self._hints if k[0] == topic]:
                self._hinted -= sum(len(h.ids) for h in self._hints.pop(key).values())
                self._last_ts.pop(key, None)
            for key in [k for k in self._seen_end if k[0] == topic]:
                del self._seen_end[key]
            self._forgetting.add(topic)
            try:
                await self._run(self._writer, self.store.forget, topic)
                self._forgetting.discard(topic)
                self._prune_due = True
            except Exception:
                logger.exception("event index: rows of %r not yet dropped; tried again", topic)

    # -- lookups -------------------------------------------------------------------------

    def lag(self) -> int:
        """Records acknowledged and not yet indexed, over every partition."""
        return sum(
            max(0, part.end_offset - max(self._indexed.get((name, p), 0), part.start_offset))
            for name, t in self._topics.items()
            for p, part in enumerate(t.partitions)
        )

    async def settle(self, timeout: float = SETTLE_S) -> bool:
        """Wait until every record acknowledged now is indexed; False if ``timeout`` ran out."""
        targets = {
            (name, p): part.end_offset
            for name, t in self._topics.items()
            for p, part in enumerate(t.partitions)
            if self._indexed.get((name, p), -1) < part.end_offset
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            targets = {
                k: e
                for k, e in targets.items()
                if k[0] in self._topics and self._indexed.get(k, -1) < e
            }
            remaining = deadline - loop.time()
            if not targets or self._task is None or self._task.done() or not self._loaded:
                return not targets and self._loaded
            if remaining <= 0:
                return False
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def _records(self, positions: Sequence[Position]) -> dict[Position, bytes]:
        """The records at ``positions`` that the log still has.

        A read checks the CRC of every batch it crosses, whole, so positions of one
        partition close together are read in one go (the records of an order
        published in one batch cost one read, not one each), and a position alone
        is read alone (never the large batch after it).
        """
        wanted: dict[tuple[str, int], list[int]] = {}
        for topic, partition, offset in positions:
            wanted.setdefault((topic, partition), []).append(offset)
        out: dict[Position, bytes] = {}
        for (topic, partition), offsets in wanted.items():
            t = self._topics.get(topic)
            if t is None or partition >= len(t.partitions):
                continue
            part = t.partitions[partition]
            offsets = sorted(o for o in set(offsets) if part.start_offset <= o < part.end_offset)
            i = 0
            while i < len(offsets):
                j = i
                while j + 1 < len(offsets) and offsets[j + 1] - offsets[i] < READ_SPAN:
                    j += 1
                got = await self._read(part, offsets[i], offsets[j] - offsets[i] + 1)
                for o in offsets[i : j + 1]:
                    payload = got.get(o)
                    if payload is None and j > i:  # past what one read may carry
                        payload = (await self._read(part, o, 1)).get(o)
                    if payload is not None:
                        out[(topic, partition, o)] = payload
                i = j + 1
        return out

    @staticmethod
    async def _read(part: PartitionStore, offset: int, count: int) -> dict[int, bytes]:
        try:
            # A read preads about max_bytes at once: ask for what ``count`` records of
            # about a KiB take, so a lone record costs a small read (a bigger one still
            # comes whole: a read answers at least one record).
            got = await part.read(offset, count, min(count << 10, 1 << 22))
        except (OffsetOutOfRange, StorageUnavailable):
            return {}
        return {o: payload for o, _, payload in got}  # an offset lost to damage is absent

    @staticmethod
    def _check(where: Position, payload: bytes | None, attr: str, value: str) -> Found | None:
        """The record, if it is there and carries ``value`` (never a stale row)."""
        if payload is None:
            return None
        try:
            ev = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(ev, dict) or ev.get(attr) != value:
            return None  # a hash collision, or an offset a power cut let be reused
        return Found(where[0], where[1], where[2], payload)

    async def find_id(
        self, event_id: str, visible: Callable[[str], bool] | None = None
    ) -> Found | None:
        """The first record published with ``event_id`` in a topic ``visible`` allows.

        None when there is none; :class:`ServerBusy` when there may be one the index
        has not taken in yet (it trails a publish load it cannot keep up with).
        """
        settled = await self.settle()
        rows = await self._run(
            self._reader, self.store.by_id, key_hash(event_id), MAX_ID_MATCHES, run_key(event_id)
        )
        for where in rows:
            if visible is not None and not visible(where[0]):
                continue
            found = self._check(where, (await self._records([where])).get(where), "id", event_id)
            if found is not None:
                return found
        if not settled:
            raise self._behind()
        return None

    def _behind(self) -> ServerBusy:
        lag = self.lag()
        return ServerBusy(
            f"the event index is {lag} events behind the log; try again", behind=lag
        )

    async def find_correlated(
        self,
        correlation_id: str,
        after: tuple[int, int] | None = None,
        limit: int = 100,
        visible: Callable[[str], bool] | None = None,
    ) -> Page:
        """Records with ``correlationid``, across topics, in publish order, a page at a time.

        :class:`ServerBusy` rather than a page the index cannot vouch is whole.
        """
        if not (1 <= limit <= MAX_LIMIT):
            raise BadRequest(f"limit must be from 1 to {MAX_LIMIT}", field="limit")
        if not await self.settle():
            raise self._behind()
        h = key_hash(correlation_id)
        out: list[Found] = []
        cursor = after
        fetch = min(MAX_LIMIT, limit + 1)
        while True:
            rows = await self._run(self._reader, self.store.by_correlation, h, cursor, fetch)
            payloads = await self._records(
                [(t, p, o) for _, _, t, p, o in rows if visible is None or visible(t)]
            )
            for ts, seq, topic, partition, offset in rows:
                if len(out) == limit:
                    # Full, and the index has more past the last one answered.
                    return Page(out, f"{cursor[0]}-{cursor[1]}" if cursor else None)
                cursor = (ts, seq)
                if visible is not None and not visible(topic):
                    continue
                where = (topic, partition, offset)
                found = self._check(where, payloads.get(where), "correlationid", correlation_id)
                if found is not None:
                    out.append(found)
            if len(rows) < fetch:
                return Page(out, None)
