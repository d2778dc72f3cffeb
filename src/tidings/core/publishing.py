"""Publishing on the hub: dedupe, partition choice, appends, and what each event got.

:class:`~tidings.core.hub.Hub` takes these methods from :class:`PublishOps`.
Every event is checked and filled before any is appended (see
:mod:`tidings.events.envelope`), so a bad event writes nothing. While an append is in
flight its ids are claimed: a concurrent publish of one of them answers the
first's position instead of appending a second copy.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Mapping, Sequence
from functools import partial
from itertools import repeat
from operator import contains, is_, itemgetter, methodcaller
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.catalog import Catalog
from tidings.core.dedupe import DedupeWindow, dedupe_key
from tidings.core.indexrows import Hint
from tidings.core.metrics import Metrics
from tidings.core.published import Published, Run, Spread, answer_deduplicated
from tidings.core.schemas.registry import SchemaRegistry
from tidings.core.storage import Deduplicated
from tidings.errors import TooLarge

if TYPE_CHECKING:
    from tidings.core.eventindex import EventIndex
    from tidings.core.hub import HubOptions, Topic
    from tidings.core.storage import PartitionStore, Storage
    from tidings.log.config import Clock


class _Claim:
    """One append in flight and the dedupe keys of its events, in offset order.

    With ``new_in``, the keys are instead the ids the hub has just made for a batch
    to that topic: they need no claim, as no one else can know them yet, and enter
    the window as one run. A claim that is not ``shared`` (one id the hub made) is
    not claimed either, and enters the window by its key. ``hint``: its events for
    the event index, handed over once the append is acknowledged.
    """

    __slots__ = ("future", "hint", "keys", "new_in", "partition", "settled", "shared")

    def __init__(
        self,
        partition: int,
        append: Awaitable[int],
        keys: list[str],
        new_in: str | None = None,
        shared: bool = True,
        hint: Hint | None = None,
    ) -> None:
        self.partition = partition
        self.hint = hint
        self.future: asyncio.Future[int] = (
            append if isinstance(append, asyncio.Future) else asyncio.ensure_future(append)
        )
        self.keys = keys
        self.new_in = new_in
        self.shared = shared and new_in is None  # in PublishOps._appending while in flight
        self.settled = False  # out of the claims, and in the dedupe window if durable

    async def offset(self, dkey: str) -> int:
        """Where the event of ``dkey`` lands (waits for the append; rare: a repeat)."""
        base = await asyncio.shield(self.future)
        k = self.keys.index(dkey)
        return base.offsets[k] if isinstance(base, Deduplicated) else base + k


class PublishOps:
    """The publishing half of :class:`~tidings.core.hub.Hub`, which provides these."""

    options: HubOptions
    storage: Storage
    clock: Clock
    catalog: Catalog
    schemas: SchemaRegistry
    dedupe: DedupeWindow
    index: EventIndex
    metrics: Metrics
    topics: dict[str, Topic]
    _appending: dict[str, _Claim]
    _refilled: asyncio.Event

    async def _topic_for_publish(self, name: str) -> Topic:
        raise NotImplementedError

    def _check_publishable(self, name: str) -> None:
        raise NotImplementedError

    def _append_linked(
        self,
        topic: str,
        parts: Sequence[tuple[int, Sequence[bytes]]],
        ids: Sequence[Sequence[str]] | None,
    ) -> Awaitable[list[int]]:
        """``storage.append_linked``, with each part's event ids when given."""
        if ids is None:
            return self.storage.append_linked(topic, parts)
        return self.storage.append_linked(topic, parts, ids=ids)

    async def publish(
        self, topic_name: str, events: Sequence[Mapping[str, Any]], *, new_ids: bool = False,
        own: bool = False,
    ) -> list[Published]:
        """Append checked events (see :func:`tidings.events.normalize_event`), all or none.

        Events with an ``id`` already seen on this topic within the dedupe window
        append nothing and answer the first position. ``new_ids``: the hub gave every
        event its id just now (see :meth:`publish_batch`). ``own``: the hub writes to
        a topic of its own (``__view.{name}.by-key``), which must exist.
        """
        result = await self.publish_batch(topic_name, events, new_ids=new_ids, own=own)
        return result if isinstance(result, list) else result.published()

    async def publish_batch(
        self, topic_name: str, events: Sequence[Mapping[str, Any]], *, new_ids: bool = False,
        own: bool = False,
    ) -> Run | Spread | list[Published]:
        """:meth:`publish`, answering a :class:`Run` when the batch landed whole and new,
        a :class:`Spread` when it was new and its keys spread it over partitions.

        ``new_ids`` says that every id is a UUIDv7 the hub made for this request, so
        none can repeat one in the window, in the batch or in a concurrent append:
        those checks are skipped. The ids still enter the window, so a producer that
        sends one of them again later gets its first position.
        """
        if not events:
            # An empty batch is a valid CloudEvents batch (JSON format 4.3): it is
            # refused where a publish would be, appends nothing and makes no topic.
            if not own:
                self._check_publishable(topic_name)
            return []
        if not self._refilled.is_set():
            # Just started: until the window knows the log's recent ids, a retry
            # could be appended twice.
            await self._refilled.wait()
        if topic_name not in self.topics:
            # A publish that makes its topic: refuse an event too large before the
            # topic exists, so a refused publish leaves none behind.
            _check_sizes(events, self.options.max_event_bytes)
        topic = self.topics[topic_name] if own else await self._topic_for_publish(topic_name)
        if topic.schemas != "off":
            # Before anything is appended: a batch with one bad event writes nothing.
            self.schemas.check_events(events, topic.schemas == "required")
        now = self.clock.time_ms()
        dedupe = self.dedupe
        dedupe.expire(now)
        n = len(topic.partitions)
        sticky = topic.rr % n
        topic.rr += 1
        if n > 1 and self.storage.shared_dedupe and not new_ids:
            # From the first id, not in turn: a retry through any node of a storage
            # that deduplicates by id lands in the partition the first one did.
            sticky = zlib.crc32(events[0]["id"].encode()) % n
        if len(events) == 1:
            return [await self._publish_one(topic, events[0], now, sticky, new_ids)]
        spread = self._start_spread(topic, events, new_ids, now)
        if spread is not None:
            # As below: the events go now, while they are in the CPU's cache.
            claims, ids, order, nbytes, types = spread
            del events
            bases = await self._await_claims(claims, now)
            self.catalog.note(topic_name, types)
            self.metrics.published(topic_name, len(ids), nbytes)
            return _spread_result(ids, claims, bases, order)
        started = self._start_new(topic, events, sticky, new_ids, now)
        if started is not None:
            # Nothing needs the events any more. Without this frame's reference (and
            # the caller's: see PublishEndpoint) they are freed here, still in the
            # CPU's cache, instead of once the append is durable, when freeing them
            # costs a cache miss per object.
            claim, ids, nbytes, types = started
            del events
            [base] = await self._await_claims([claim], now)
            # Noted once stored: a refused or failed publish names no type.
            self.catalog.note(topic_name, types)
            self.metrics.published(topic_name, len(ids), nbytes)
            if isinstance(base, Deduplicated):
                return answer_deduplicated(ids, claim.partition, base)
            return Run(ids, claim.partition, base)
        # Some ids repeat (within the batch, the window or a concurrent append),
        # or keys spread the batch over partitions: event by event.
        by_part: dict[int, tuple[list[int], list[bytes], list[str]]] = {}
        results: list[Published | None] = [None] * len(events)
        first_in_batch: dict[str, int] = {}
        repeats: list[tuple[int, int]] = []
        waits: list[tuple[int, _Claim, str]] = []
        appending = self._appending
        lookup = dedupe.get
        dumps = orjson.dumps
        crc32 = zlib.crc32
        limit = self.options.max_event_bytes
        prefix = dedupe_key(topic_name, "")
        nbytes = 0
        for i, ev in enumerate(events):
            eid = ev["id"]
            dkey = prefix + eid
            hit = lookup(topic_name, eid, now, dkey)
            if hit is not None:
                results[i] = Published(eid, hit.partition, hit.offset, True)
                continue
            first = first_in_batch.get(dkey)
            if first is not None:
                repeats.append((i, first))
                continue
            earlier = appending.get(dkey)
            if earlier is not None:
                waits.append((i, earlier, dkey))
                continue
            first_in_batch[dkey] = i
            key = ev.get("partitionkey")
            p = crc32(key.encode()) % n if key is not None and n > 1 else sticky
            payload = dumps(ev)
            if len(payload) > limit:
                raise _too_large(len(payload), limit, i)
            nbytes += len(payload)
            lists = by_part.get(p)
            if lists is None:
                lists = by_part[p] = ([], [], [])
            lists[0].append(i)
            lists[1].append(payload)
            lists[2].append(dkey)
        parts = list(by_part)
        part_ids: list[list[str]] | None = None
        if self.storage.shared_dedupe:
            part_ids = [[events[i]["id"] for i in by_part[p][0]] for p in parts]
        if len(parts) == 1:
            [p] = parts
            append = _append(topic.partitions[p], by_part[p][1], part_ids[0] if part_ids else None)
            claims = [_Claim(p, append, by_part[p][2])]
        else:
            # One publish over several partitions: all of it or none, across a crash too.
            linked = asyncio.ensure_future(
                self._append_linked(topic.name, [(p, by_part[p][1]) for p in parts], part_ids)
            )
            claims = [
                _Claim(p, _part_of(linked, k), by_part[p][2]) for k, p in enumerate(parts)
            ]
        bases = await self._await_claims(claims, now)
        self.catalog.saw(topic_name, events)
        make = tuple.__new__  # skips NamedTuple's Python-level __new__: one per event
        for p, base in zip(parts, bases, strict=True):
            indexes = by_part[p][0]
            if isinstance(base, Deduplicated):  # found stored by the storage: a retry
                for k, i in enumerate(indexes):
                    results[i] = Published(events[i]["id"], p, base.offsets[k], base.repeated[k])
                continue
            for k, i in enumerate(indexes):
                results[i] = make(Published, (events[i]["id"], p, base + k, False))
        for i, claim, dkey in waits:
            results[i] = Published(events[i]["id"], claim.partition, await claim.offset(dkey), True)
        for i, first in repeats:
            r = results[first]
            assert r is not None
            results[i] = Published(r.id, r.partition, r.offset, True)
        self.metrics.published(topic_name, len(first_in_batch), nbytes)
        return [r for r in results if r is not None]

    def _new_ids(
        self, topic: Topic, events: Sequence[Mapping[str, Any]], new_ids: bool
    ) -> tuple[list[str], list[str], str | None] | None:
        """The batch's ids, the keys its claim holds and the topic a run of made ids
        enters the window as; None when an id repeats one in the batch, in the window
        or in an append in flight (the careful path of :meth:`publish_batch`)."""
        ids = list(map(_get_id, events))
        if new_ids:
            return ids, ids, topic.name
        claim_keys = list(map(dedupe_key(topic.name, "").__add__, ids))
        if (
            len(set(ids)) != len(ids)
            or self.dedupe.knows_any(topic.name, ids, claim_keys)
            or (self._appending and not self._appending.keys().isdisjoint(claim_keys))
        ):
            return None
        return ids, claim_keys, None

    def _start_spread(
        self, topic: Topic, events: Sequence[Mapping[str, Any]], new_ids: bool, now: int
    ) -> tuple[list[_Claim], list[str], list[int], int, set[str]] | None:
        """Append a batch of new events that each carry a ``partitionkey``, spread over
        the topic's partitions, with no loop per event in Python: the claims (one per
        partition, in order of first use), the ids, the events' indexes grouped by
        partition in that order, the size in bytes and the event types. None when the
        batch needs :meth:`publish_batch`'s careful path (a repeated id, an event
        without a key) or :meth:`_start_new` (a topic of one partition)."""
        n = len(topic.partitions)
        if n == 1 or len(events) == 1:
            return None
        keys = list(map(_get_key, events))
        if None in keys:
            return None
        known = self._new_ids(topic, events, new_ids)
        if known is None:
            return None
        ids, claim_keys, new_in = known
        shared = self.storage.shared_dedupe and new_in is None  # ids passed to appends
        # As the careful path picks a partition: CRC-32 of the key's UTF-8, modulo n.
        parts = list(map(n.__rmod__, map(zlib.crc32, map(str.encode, keys))))
        payloads = list(map(orjson.dumps, events))
        sizes = list(map(len, payloads))
        limit = self.options.max_event_bytes
        if max(sizes) > limit:
            i = next(i for i, size in enumerate(sizes) if size > limit)
            raise _too_large(sizes[i], limit, i)
        types = set(map(_get_type, events))
        corrs = _corrs(events)
        used = list(dict.fromkeys(parts))  # partitions in order of first use
        if len(used) == 1:
            [p] = used
            part = topic.partitions[p]
            hint = Hint(topic.name, p, part, ids, corrs, now)
            append = _append(part, payloads, ids if shared else None)
            claim = _Claim(p, append, claim_keys, new_in, hint=hint)
            return [claim], ids, list(range(len(events))), sum(sizes), types
        # Each partition's events in batch order: a stable sort on the partition's rank.
        rank = dict(zip(used, range(len(used)), strict=True))
        ranks: list[int] = list(map(rank.__getitem__, parts))
        order = sorted(range(len(events)), key=ranks.__getitem__)
        counts = Counter(parts)
        cuts: list[list[int]] = []
        start = 0
        for p in used:
            cuts.append(order[start : start + counts[p]])
            start += counts[p]
        pick = payloads.__getitem__
        parts_ids = [list(map(ids.__getitem__, idx)) for idx in cuts] if shared else None
        linked = asyncio.ensure_future(
            self._append_linked(
                topic.name,
                [(p, list(map(pick, idx))) for p, idx in zip(used, cuts, strict=True)],
                parts_ids,
            )
        )
        claims = []
        for k, (p, idx) in enumerate(zip(used, cuts, strict=True)):
            part_ids = list(map(ids.__getitem__, idx))
            keys = part_ids if new_in is not None else list(map(claim_keys.__getitem__, idx))
            part_corrs = None if corrs is None else list(map(corrs.__getitem__, idx))
            hint = Hint(topic.name, p, topic.partitions[p], part_ids, part_corrs, now)
            claims.append(_Claim(p, _part_of(linked, k), keys, new_in, hint=hint))
        return claims, ids, order, sum(sizes), types

    def _start_new(
        self,
        topic: Topic,
        events: Sequence[Mapping[str, Any]],
        sticky: int,
        new_ids: bool,
        now: int,
    ) -> tuple[_Claim, list[str], int, set[str]] | None:
        """Append a batch of new ids bound for one partition, with no loop per event in
        Python: its claim, ids, size in bytes and event types. None when the batch needs
        :meth:`publish_batch`'s careful path."""
        if len(topic.partitions) > 1 and any(map(contains, events, repeat("partitionkey"))):
            return None
        known = self._new_ids(topic, events, new_ids)
        if known is None:
            return None
        ids, claim_keys, new_in = known
        payloads = list(map(orjson.dumps, events))
        sizes = list(map(len, payloads))
        limit = self.options.max_event_bytes
        if max(sizes) > limit:
            i = next(i for i, size in enumerate(sizes) if size > limit)
            raise _too_large(sizes[i], limit, i)
        part = topic.partitions[sticky]
        shared = self.storage.shared_dedupe and new_in is None  # ids passed to the append
        append = _append(part, payloads, ids if shared else None)
        types = set(map(_get_type, events))
        hint = Hint(topic.name, sticky, part, ids, _corrs(events), now, new_in is not None)
        return _Claim(sticky, append, claim_keys, new_in, hint=hint), ids, sum(sizes), types

    async def _await_claims(self, claims: list[_Claim], now: int) -> list[int]:
        """Await appends while their ids are claimed: a concurrent publish of one of
        them answers its position instead of appending a second copy.

        The appends go on if the request is cancelled (its client went away), and
        each one, once durable, enters the dedupe window all the same: a retry of
        the request finds its events instead of appending them twice.
        """
        appending = self._appending
        for claim in claims:
            if claim.shared:
                appending.update(dict.fromkeys(claim.keys, claim))
        if len(claims) == 1:
            # What asyncio.shield does, in one callback instead of two and a future:
            # the request awaits its own future, so cancelling it leaves the append be.
            [claim] = claims
            waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            claim.future.add_done_callback(partial(self._settled_then, claim, now, waiter))
            return [await waiter]
        for claim in claims:
            claim.future.add_done_callback(partial(self._settled, claim, now))
        bases = list(await asyncio.shield(asyncio.gather(*(c.future for c in claims))))
        for claim in claims:  # now, not at the next turn of the loop
            self._settled(claim, now, claim.future)
        return bases

    def _settled_then(
        self, claim: _Claim, now: int, waiter: asyncio.Future[int], future: asyncio.Future[int]
    ) -> None:
        """:meth:`_settled`, then hand the append's outcome to ``waiter`` (if still awaited)."""
        self._settled(claim, now, future)
        if waiter.done():
            return  # the request was cancelled
        if future.cancelled():
            waiter.cancel()
        elif (exc := future.exception()) is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(future.result())

    def _settled(self, claim: _Claim, now: int, future: asyncio.Future[int]) -> None:
        if claim.settled:
            return
        claim.settled = True
        if claim.shared:
            appending = self._appending
            keys = claim.keys
            if all(map(is_, map(appending.get, keys), repeat(claim))):
                deque(map(appending.__delitem__, keys), 0)  # the usual case, in C
            else:
                for dkey in keys:
                    if appending.get(dkey) is claim:
                        del appending[dkey]
        if future.cancelled() or future.exception() is not None:
            return
        base = future.result()
        if isinstance(base, Deduplicated):  # some were stored before (a retry): no run
            self.dedupe.remember_each(claim.keys, claim.partition, base.offsets, now)
            return
        if claim.hint is not None:
            self.index.hint(base, claim.hint)
        if claim.new_in is None:
            self.dedupe.remember_run(claim.keys, claim.partition, future.result(), now)
        else:
            self.dedupe.remember_new(
                claim.new_in, claim.keys, claim.partition, future.result(), now
            )

    async def _publish_one(
        self, topic: Topic, ev: Mapping[str, Any], now: int, sticky: int, made: bool
    ) -> Published:
        """The common case of :meth:`publish`, without a batch's bookkeeping. ``made``:
        the hub made the event's id just now, so no one else can know it yet."""
        eid = ev["id"]
        dkey = dedupe_key(topic.name, eid)
        if not made:
            hit = self.dedupe.get(topic.name, eid, now, dkey)
            if hit is not None:
                return Published(eid, hit.partition, hit.offset, True)
            earlier = self._appending.get(dkey)
            if earlier is not None:
                # The same id is being appended by a concurrent request: its position.
                return Published(eid, earlier.partition, await earlier.offset(dkey), True)
        key = ev.get("partitionkey")
        n = len(topic.partitions)
        p = zlib.crc32(key.encode()) % n if key is not None and n > 1 else sticky
        payload = orjson.dumps(ev)
        if len(payload) > self.options.max_event_bytes:
            raise _too_large(len(payload), self.options.max_event_bytes, None)
        part = topic.partitions[p]
        corr = ev.get("correlationid")
        hint = Hint(topic.name, p, part, [eid], None if corr is None else [corr], now)
        ids = [eid] if self.storage.shared_dedupe and not made else None
        claim = _Claim(p, _append(part, (payload,), ids), [dkey], shared=not made, hint=hint)
        # _await_claims for one claim, written out: no coroutine and list of its own.
        if claim.shared:
            self._appending[dkey] = claim
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        claim.future.add_done_callback(partial(self._settled_then, claim, now, waiter))
        offset = await waiter
        if isinstance(offset, Deduplicated):  # the storage held it (a retry, any node)
            return Published(eid, p, offset.offsets[0], offset.repeated[0])
        self.catalog.note(topic.name, (ev["type"],))
        self.metrics.published(topic.name, 1, len(payload))
        return tuple.__new__(Published, (eid, p, offset, False))


def _append(
    part: PartitionStore, payloads: Sequence[bytes], ids: Sequence[str] | None
) -> Awaitable[int]:
    """``part.append``, with the records' event ids when given (a ``shared_dedupe``
    storage's)."""
    return part.append(payloads) if ids is None else part.append(payloads, ids=ids)


def _spread_result(
    ids: list[str], claims: list[_Claim], bases: list[int], order: list[int]
) -> Spread | list[Published]:
    """Each event's partition and offset, in batch order, from each part's base."""
    if any(isinstance(b, Deduplicated) for b in bases):
        out: list[Published] = [None] * len(ids)  # type: ignore[list-item]
        start = 0
        for claim, base in zip(claims, bases, strict=True):
            count = len(claim.keys)
            part = answer_deduplicated(
                [ids[i] for i in order[start : start + count]], claim.partition,
                base if isinstance(base, Deduplicated)
                else Deduplicated(range(base, base + count), [False] * count),
            )  # fmt: skip
            for i, published in zip(order[start : start + count], part, strict=True):
                out[i] = published
            start += count
        return out
    partitions = [0] * len(ids)
    offsets = [0] * len(ids)
    start = 0
    for claim, base in zip(claims, bases, strict=True):
        count = len(claim.keys)
        idx = order[start : start + count]
        deque(map(partitions.__setitem__, idx, repeat(claim.partition)), 0)
        deque(map(offsets.__setitem__, idx, range(base, base + count)), 0)
        start += count
    return Spread(ids, partitions, offsets)


def _corrs(events: Sequence[Mapping[str, Any]]) -> list[str | None] | None:
    """Each event's correlationid; None when no event has one."""
    corrs: list[str | None] = list(map(_get_corr, events))
    return None if corrs.count(None) == len(corrs) else corrs


_get_id = itemgetter("id")
_get_corr = methodcaller("get", "correlationid")
_get_key = methodcaller("get", "partitionkey")
_get_type = itemgetter("type")


async def _part_of(linked: Awaitable[list[int]], k: int) -> int:
    """The base offset of part ``k`` of a linked append."""
    return (await linked)[k]


def _check_sizes(events: Sequence[Mapping[str, Any]], limit: int) -> None:
    """Raise :func:`_too_large` for the first event over ``limit`` as stored."""
    one = len(events) == 1
    for i, ev in enumerate(events):
        size = len(orjson.dumps(ev))
        if size > limit:
            raise _too_large(size, limit, None if one else i)


def _too_large(size: int, limit: int, index: int | None) -> TooLarge:
    where = "event" if index is None else f"event {index}"
    fields: dict[str, Any] = {"size": size, "limit": limit}
    if index is not None:
        fields["index"] = index
    return TooLarge(f"{where} is {size} bytes stored, over the limit of {limit}", **fields)


