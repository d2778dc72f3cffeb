"""One publish over several partitions, written whole or not at all, across a crash.

Each partition gets one linked batch (see :mod:`tidings.log.format`) naming every
part by partition, base offset and count. Offsets are assigned when the parts are
queued, so each part can name the others before any is written. A part is held
(:meth:`~tidings.log.partition.PartitionLog.append_held`): its records, and every
record after it in its partition, stay unreadable and unacknowledged until every
part is written (fsynced under ``always``) and every part held before it in its
partition is released; then all are released together. (A publish released while
a part of it stood behind another publish's part, not yet whole, would be
acknowledged and then cut with it by a crash.)

So whatever instant the process dies, nothing acknowledged or read depends on a
linked batch that is not whole on disk. At start-up :func:`resolve` keeps a linked
batch only if every part it names is there, and otherwise cuts it, with what
follows it in its partition (never acknowledged, since it waited behind it), as a
torn tail; a cut may tear another linked batch, so it runs until nothing changes.
A part lost to damage (a bad batch with good batches after it, see
:mod:`tidings.log.damage`) counts as there: like any damage, it costs its own
records only, and the other parts are kept.

If a part fails to be written (or fsynced), or one of its partitions fails before
the publish is released (its interval fsync, or another publish sharing it), the
publish is refused whole (503): no part is acknowledged or read, and every
partition of it fails, failing the appends waiting or held there. Each then heals
by itself (every ``HEAL_S``, once there is room): it is cut back to what it
acknowledged, its part with it, and takes appends again at that offset.
A torn batch that :func:`resolve` cannot cut (no room for the side copy) leaves
its partition failed, read up to the batch, until healing makes the cut.

A power loss is covered too: recovery looks at the active segment and at segments
marked ``.linked``: rolled while a part in them was held, or, under ``interval``,
rolled with a released part in them whose other parts may not be fsynced yet (that
mark goes once the next flush round has synced every partition; see
:meth:`~tidings.log.partition.PartitionLog.take_linked_marks`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Sequence

from tidings.errors import StorageUnavailable
from tidings.log import format as fmt
from tidings.log.partition import PartitionLog


def append_linked(
    parts: Sequence[tuple[int, PartitionLog, Sequence[bytes]]], timestamp_ms: int
) -> asyncio.Future[list[int]]:
    """Queue ``(partition number, log, payloads)`` parts as one publish; the future
    gives each part's base offset once all are written, and readable."""
    for _, log, _ in parts:
        log.check_appendable()
    # One append time for every part, at least the last given in each partition.
    timestamp_ms = max([timestamp_ms] + [log.last_ts for _, log, _ in parts])
    ordered = sorted(parts, key=lambda part: part[0])
    link = fmt.encode_link(
        fmt.Link(
            int.from_bytes(os.urandom(8), "little"),
            tuple((p, log.next_offset, len(payloads)) for p, log, payloads in ordered),
        )
    )
    # No await between reading next_offset and queueing: the offsets named are theirs.
    written = [log.append_held(payloads, link, timestamp_ms) for _, log, payloads in parts]
    return asyncio.ensure_future(_settle(parts, written))


async def _settle(
    parts: Sequence[tuple[int, PartitionLog, Sequence[bytes]]],
    written: list[asyncio.Future[int]],
) -> list[int]:
    try:
        bases = list(await asyncio.gather(*written))
    except BaseException as exc:
        for _, log, _ in parts:
            log.fail(exc)
        raise
    # A partition may have failed since its part was written (its interval fsync, or
    # another linked publish sharing it): its hold is gone. Release none then.
    if not all(log.holding(base) for (_, log, _), base in zip(parts, bases, strict=True)):
        err = StorageUnavailable("a partition of this publish failed before it was whole")
        for _, log, _ in parts:
            log.fail(err)
        raise err
    for (_, log, _), base in zip(parts, bases, strict=True):
        log.release(base)
    return bases


def resolve(first: PartitionLog, partition: Callable[[int], PartitionLog]) -> None:
    """Check the linked batches recovery found in ``first`` and in every partition of
    its topic they lead to (``partition`` opens one by number), cutting those torn."""
    logs: dict[int, PartitionLog] = {}
    todo = [first]
    while todo:
        log = todo.pop()
        for _, _, link in log.report.linked:
            for p, _, _ in link.parts:
                if p not in logs:
                    logs[p] = partition(p)
                    todo.append(logs[p])
    if not logs:
        return
    ends = {p: log.next_offset for p, log in logs.items()}
    # What recovery found, by partition and base: a part found there is not read
    # from disk again (that cost ~70 us a part, a minute of start-up for 40,000
    # publishes); only a part in an unmarked sealed segment is looked up.
    found = {p: {base: link for base, _, link in log.report.linked} for p, log in logs.items()}
    changed = True
    while changed:
        changed = False
        for p, log in logs.items():
            for base, _, link in sorted(log.report.linked, key=lambda found: found[0]):
                if base >= ends[p]:
                    break
                if not _whole(link, logs, ends, found):
                    ends[p] = base
                    changed = True
                    break
    for p, log in logs.items():
        if ends[p] < log.next_offset:
            log.cut_from(ends[p], "a linked batch not whole in every partition")
    for log in _unique(logs.values()):
        if not log.owes_cut:  # else its marks stay until healing has cut it
            log.forget_linked_markers()


def _whole(
    link: fmt.Link,
    logs: dict[int, PartitionLog],
    ends: dict[int, int],
    found: dict[int, dict[int, fmt.Link]],
) -> bool:
    return all(
        base + count <= ends[p] and _there(logs[p], base, count, link, found[p].get(base))
        for p, base, count in link.parts
    )


def _there(
    log: PartitionLog, base: int, count: int, link: fmt.Link, known: fmt.Link | None
) -> bool:
    """Whether the part ``base``/``count`` of ``link`` is in ``log``: its linked batch
    (``known`` if recovery listed it), or a bad range covering it with a good batch
    after it (damage, not a torn write: it was written whole once, and damage costs
    its own records only)."""
    found = known if known is not None else log.link_at(base)
    if found is not None:
        return found == link
    return any(d.first_offset <= base and base + count <= d.end_offset for d in log.damage)


def _unique(logs: Iterable[PartitionLog]) -> list[PartitionLog]:
    return list({id(log): log for log in logs}.values())
