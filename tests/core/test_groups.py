"""ConsumerGroup, sans I/O: a list-backed log, explicit times, deliveries and dead letters out."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar, cast

import orjson
import pytest

from tidings.core.deadletters import DeadLetter
from tidings.core.groups import ConsumerGroup, Delivery, GroupConfig
from tidings.core.patterns import TypeFilter
from tidings.errors import BadRequest, StaleLease

_T = TypeVar("_T")

def drive(step: Coroutine[Any, Any, _T]) -> _T:
    """Run a group's fetch to its end: its reads here never wait, so it never yields."""
    try:
        step.send(None)
    except StopIteration as done:
        return cast(_T, done.value)
    step.close()
    raise AssertionError("a fetch over reads that never wait yielded")


ACK_WAIT = 1_000


class ListLog:
    """Partitions as lists of (offset, timestamp, payload); ``read`` is the group's ReadFn."""

    def __init__(self, partitions: int = 1) -> None:
        self.parts: list[list[tuple[int, int, bytes]]] = [[] for _ in range(partitions)]
        self.reads = 0

    def add(
        self, etype: str = "order.placed", key: str | None = None, p: int = 0, **kw: Any
    ) -> int:
        part = self.parts[p]
        event: dict[str, Any] = {"type": etype, "id": f"{p}-{len(part)}", **kw}
        if key is not None:
            event["partitionkey"] = key
        part.append((len(part), 0, orjson.dumps(event)))
        return len(part) - 1

    async def read(self, p: int, offset: int, n: int) -> Sequence[tuple[int, int, bytes]]:
        self.reads += 1
        return self.parts[p][offset : offset + n]


def group(
    partitions: int = 1,
    positions: dict[int, tuple[int, list[int]]] | None = None,
    **config: Any,
) -> ConsumerGroup:
    config.setdefault("ack_wait_ms", ACK_WAIT)
    if positions is None:
        positions = {p: (0, []) for p in range(partitions)}
    return ConsumerGroup("orders", "g", GroupConfig(**config), positions)


def done(g: ConsumerGroup) -> dict[int, tuple[int, list[int]]]:
    """The saved positions without the delivery counts: committed and done above it."""
    return {p: (c, above) for p, (c, above, _) in g.positions().items()}


def offsets(deliveries: Sequence[Delivery]) -> list[int]:
    return [d.offset for d in deliveries]


def fetch(
    g: ConsumerGroup, log: ListLog, now: int, n: int = 10, types: TypeFilter | None = None
) -> list[Delivery]:
    out, dead = drive(g.fetch(now, n, log.read, types))
    assert dead == []
    return out


@pytest.fixture
def log() -> ListLog:
    log = ListLog()
    for _ in range(5):
        log.add()
    return log


# -- leases --------------------------------------------------------------------------------


def test_fetch_leases_in_offset_order(log: ListLog) -> None:
    g = group()
    got = fetch(g, log, now=0, n=3)
    assert offsets(got) == [0, 1, 2]
    assert [d.deliveries for d in got] == [1, 1, 1]
    assert [d.partition for d in got] == [0, 0, 0]
    assert len({d.lease for d in got}) == 3
    assert got[0].payload == log.parts[0][0][2]
    assert g.in_flight() == 3
    assert g.delivered == 3
    assert offsets(fetch(g, log, now=0, n=10)) == [3, 4]
    assert fetch(g, log, now=0) == []
    assert g.next_due_ms() == ACK_WAIT


def test_fetch_needs_a_positive_max(log: ListLog) -> None:
    with pytest.raises(BadRequest):
        drive(group().fetch(0, 0, log.read))


def test_fetch_spreads_over_partitions() -> None:
    log = ListLog(partitions=3)
    for p in range(3):
        for _ in range(4):
            log.add(p=p)
    g = group(partitions=3)
    got = fetch(g, log, now=0, n=12)
    assert sorted((d.partition, d.offset) for d in got) == [
        (p, o) for p in range(3) for o in range(4)
    ]


# -- ack -----------------------------------------------------------------------------------


def test_ack_in_order_advances_committed(log: ListLog) -> None:
    g = group()
    got = fetch(g, log, now=0, n=5)
    assert g.ack([got[0].lease, got[1].lease]) == 2
    assert g.committed(0) == 2
    assert done(g) == {0: (2, [])}
    assert g.in_flight() == 3


def test_ack_out_of_order_commits_only_a_contiguous_prefix(log: ListLog) -> None:
    g = group()
    got = fetch(g, log, now=0, n=5)
    g.ack([got[3].lease, got[1].lease])
    assert g.committed(0) == 0
    assert done(g) == {0: (0, [1, 3])}
    g.ack([got[0].lease])
    assert done(g) == {0: (2, [3])}
    g.ack([got[4].lease])
    assert done(g) == {0: (2, [3, 4])}
    g.ack([got[2].lease])
    assert done(g) == {0: (5, [])}
    assert g.in_flight() == 0
    assert g.next_due_ms() is None


def test_positions_with_done_above_are_not_delivered_again(log: ListLog) -> None:
    """The state a restart hands back: offsets done above committed stay done."""
    g = group(positions={0: (1, [2, 4])})
    got = fetch(g, log, now=0)
    assert offsets(got) == [1, 3]
    g.ack([d.lease for d in got])
    assert done(g) == {0: (5, [])}


def test_positions_below_committed_are_dropped() -> None:
    g = group(positions={0: (3, [1, 2, 5])})
    assert done(g) == {0: (3, [5])}


# -- nack, expiry, redelivery ----------------------------------------------------------------


def test_nack_without_delay_redelivers_at_once(log: ListLog) -> None:
    g = group()
    [d] = fetch(g, log, now=0, n=1)
    assert g.nack([d.lease], now_ms=10) == []
    [again] = fetch(g, log, now=10, n=1)
    assert (again.offset, again.deliveries) == (0, 2)
    assert again.lease != d.lease
    assert g.redelivered == 1


def test_next_due_after_a_time(log: ListLog) -> None:
    g = group()
    got = fetch(g, log, now=0, n=2)  # leases run out at ACK_WAIT
    g.nack([got[0].lease], now_ms=10)  # due at 10
    assert g.next_due_ms() == 10
    assert g.next_due_ms(after_ms=10) == ACK_WAIT
    assert g.next_due_ms(after_ms=ACK_WAIT) is None


def test_nack_with_delay(log: ListLog) -> None:
    g = group()
    got = fetch(g, log, now=0, n=5)
    g.nack([got[1].lease], now_ms=100, delay_ms=500)
    assert g.next_due_ms() == 600
    assert fetch(g, log, now=599) == []
    [again] = fetch(g, log, now=600)
    assert (again.offset, again.deliveries) == (1, 2)
    assert g.committed(0) == 0


def test_expired_lease_is_redelivered(log: ListLog) -> None:
    g = group()
    [d] = fetch(g, log, now=0, n=1)
    assert offsets(fetch(g, log, now=ACK_WAIT - 1, n=1)) == [1]  # not 0 yet
    [again] = fetch(g, log, now=ACK_WAIT, n=1)
    assert (again.offset, again.deliveries) == (0, 2)
    with pytest.raises(StaleLease):
        g.ack([d.lease])
    assert g.ack([again.lease]) == 1
    assert g.redelivered == 1


def test_expire_without_fetch(log: ListLog) -> None:
    g = group()
    fetch(g, log, now=0, n=2)
    assert g.expire(ACK_WAIT - 1) == []
    assert g.in_flight() == 2
    assert g.expire(ACK_WAIT) == []
    assert g.in_flight() == 0
    assert offsets(fetch(g, log, now=ACK_WAIT, n=2)) == [0, 1]


def test_max_deliver_expired_becomes_a_dead_letter(log: ListLog) -> None:
    g = group(max_deliver=2)
    [d1] = fetch(g, log, now=0, n=1)
    [d2] = fetch(g, log, now=ACK_WAIT, n=1)
    assert (d2.offset, d2.deliveries) == (0, 2)
    out, dead = drive(g.fetch(2 * ACK_WAIT, 1, log.read))
    assert offsets(out) == [1]
    assert dead == [
        DeadLetter(0, 0, d1.payload, 2, "ack_wait expired after 2 deliveries (max_deliver 2)")
    ]
    # Held, not done, until the dead-letter topic has it: no position passes it yet.
    assert g.committed(0) == 0
    assert g.dead_lettered == 0
    with pytest.raises(StaleLease):
        g.ack([d2.lease])
    g.settle(dead)
    assert g.dead_lettered == 1
    assert g.committed(0) == 1


def test_a_failed_dead_letter_append_is_tried_again(log: ListLog) -> None:
    g = group(max_deliver=1)
    fetch(g, log, now=0, n=1)
    dead = g.expire(ACK_WAIT)
    assert [x.offset for x in dead] == [0]
    g.unsettle(dead)  # the append to the dead-letter topic failed
    assert g.committed(0) == 0
    out, again = drive(g.fetch(ACK_WAIT + 1, 5, log.read))
    assert 0 not in offsets(out)  # not delivered a second time past max_deliver
    assert [x.offset for x in again] == [0]
    g.settle(again)
    assert g.committed(0) == 1


def test_max_deliver_nacked_becomes_a_dead_letter(log: ListLog) -> None:
    g = group(max_deliver=1)
    got = fetch(g, log, now=0, n=2)
    dead = g.nack([got[1].lease], now_ms=5, delay_ms=1000)
    assert [(x.partition, x.offset, x.deliveries) for x in dead] == [(0, 1, 1)]
    assert dead[0].reason.startswith("nacked after 1 deliveries")
    assert done(g) == {0: (0, [])}
    g.settle(dead)
    assert done(g) == {0: (0, [1])}
    g.ack([got[0].lease])
    assert done(g) == {0: (2, [])}


def test_dead_letter_from_expire_sweep(log: ListLog) -> None:
    g = group(max_deliver=1)
    fetch(g, log, now=0, n=1)
    dead = g.expire(ACK_WAIT)
    assert [x.offset for x in dead] == [0]
    assert "ack_wait expired" in dead[0].reason
    g.settle(dead)
    assert g.committed(0) == 1


# -- stale leases -----------------------------------------------------------------------------


def test_stale_leases_change_nothing(log: ListLog) -> None:
    g = group()
    got = fetch(g, log, now=0, n=3)
    g.ack([got[0].lease])
    other_epoch = group()
    fetch(other_epoch, log, now=0, n=3)
    foreign = f"0.1.1.{other_epoch.epoch}"
    assert foreign != got[1].lease

    for stale in [
        got[0].lease,  # acked already
        foreign,  # same position and delivery, another epoch (a restart)
        "garbage",
        "0.1.1",
        "a.b.c.d",
        "9.1.1." + g.epoch,  # no such partition
        "0.1.2." + g.epoch,  # wrong delivery
        "0.99.1." + g.epoch,  # not pending
    ]:
        with pytest.raises(StaleLease) as err:
            g.ack([got[1].lease, stale, got[2].lease])
        assert err.value.fields["stale"] == [stale]
        with pytest.raises(StaleLease):
            g.nack([got[1].lease, stale], now_ms=0)
    assert done(g) == {0: (1, [])}
    assert g.in_flight() == 2
    assert g.ack([got[1].lease, got[2].lease]) == 2


def test_a_re_leased_record_refuses_the_old_lease(log: ListLog) -> None:
    g = group()
    [d] = fetch(g, log, now=0, n=1)
    g.nack([d.lease], now_ms=0)
    [again] = fetch(g, log, now=0, n=1)
    with pytest.raises(StaleLease):
        g.ack([d.lease])
    with pytest.raises(StaleLease):
        g.nack([d.lease], now_ms=0)
    assert g.ack([again.lease]) == 1


def test_lease_that_is_not_a_string_is_a_bad_request(log: ListLog) -> None:
    g = group()
    fetch(g, log, now=0, n=1)
    with pytest.raises(BadRequest):
        g.ack([5])  # type: ignore[list-item]


# -- ordering by key --------------------------------------------------------------------------


def test_ordering_key_holds_back_a_key_in_flight() -> None:
    log = ListLog()
    log.add(key="a")  # 0
    log.add(key="b")  # 1
    log.add(key="a")  # 2
    log.add()  # 3: no key, never held back
    log.add(key="b")  # 4
    g = group(ordering="key")
    first = fetch(g, log, now=0)
    assert offsets(first) == [0, 1, 3]
    assert fetch(g, log, now=0) == []
    g.ack([first[1].lease])  # b free: 4 may go
    assert offsets(fetch(g, log, now=0)) == [4]
    g.nack([first[0].lease], now_ms=0, delay_ms=500)  # a is still pending, with a delay
    assert fetch(g, log, now=100) == []
    [a0] = fetch(g, log, now=500)
    assert (a0.offset, a0.deliveries) == (0, 2)
    g.ack([a0.lease])
    assert offsets(fetch(g, log, now=500)) == [2]


def test_ordering_key_holds_back_behind_an_expired_lease() -> None:
    log = ListLog()
    log.add(key="a")
    log.add(key="a")
    g = group(ordering="key")
    assert offsets(fetch(g, log, now=0)) == [0]
    [again] = fetch(g, log, now=ACK_WAIT)
    assert (again.offset, again.deliveries) == (0, 2)
    g.ack([again.lease])
    assert offsets(fetch(g, log, now=ACK_WAIT)) == [1]


def test_ordering_key_dead_letter_frees_the_key() -> None:
    log = ListLog()
    log.add(key="a")
    log.add(key="a")
    g = group(ordering="key", max_deliver=1)
    [d] = fetch(g, log, now=0)
    dead = g.nack([d.lease], now_ms=0)
    assert len(dead) == 1
    assert offsets(fetch(g, log, now=0)) == []  # the key waits for the dead letter
    g.settle(dead)
    assert offsets(fetch(g, log, now=0)) == [1]


def test_ordering_none_ignores_keys() -> None:
    log = ListLog()
    log.add(key="a")
    log.add(key="a")
    assert offsets(fetch(group(), log, now=0)) == [0, 1]


# -- types ------------------------------------------------------------------------------------


def test_types_in_config_skip_other_events_as_done() -> None:
    log = ListLog()
    for etype in ["order.placed", "cart.added", "order.item.added", "order.paid", "cart.x"]:
        log.add(etype)
    g = group(types=("order.*",))
    got = fetch(g, log, now=0)
    assert offsets(got) == [0, 3]
    assert done(g) == {0: (0, [1, 2, 4])}
    g.ack([d.lease for d in got])
    assert done(g) == {0: (5, [])}


def test_types_on_fetch_leave_the_rest_pending() -> None:
    log = ListLog()
    for etype in ["order.placed", "cart.added", "order.paid"]:
        log.add(etype)
    g = group()
    carts = fetch(g, log, now=0, types=TypeFilter(["cart.*"]))
    assert offsets(carts) == [1]
    g.ack([carts[0].lease])
    assert done(g) == {0: (0, [1])}  # 0 is not done: it waits for another fetch
    rest = fetch(g, log, now=0)
    assert offsets(rest) == [0, 2]
    assert all(d.deliveries == 1 for d in rest)
    g.ack([d.lease for d in rest])
    assert done(g) == {0: (3, [])}


# -- seek, clamp, partitions ------------------------------------------------------------------


def test_seek_starts_over_and_makes_leases_stale(log: ListLog) -> None:
    g = group()
    got = fetch(g, log, now=0, n=5)
    g.ack([got[0].lease, got[2].lease])
    g.seek({0: 0})
    assert done(g) == {0: (0, [])}
    assert g.in_flight() == 0
    with pytest.raises(StaleLease):
        g.ack([got[1].lease])
    again = fetch(g, log, now=0)
    assert offsets(again) == [0, 1, 2, 3, 4]
    assert all(d.deliveries == 1 for d in again)
    g.seek({0: 4})
    assert offsets(fetch(g, log, now=0)) == [4]
    g.seek({0: 5})
    assert fetch(g, log, now=0) == []
    assert g.committed(0) == 5


def test_clamp_moves_past_deleted_offsets(log: ListLog) -> None:
    g = group()
    fetch(g, log, now=0, n=1)
    g.clamp(0, 0)
    assert g.in_flight() == 1
    g.clamp(0, 3)
    assert done(g) == {0: (3, [])}
    assert g.in_flight() == 0


def test_add_partitions_keeps_existing_ones(log: ListLog) -> None:
    g = group()
    fetch(g, log, now=0, n=2)
    g.add_partitions({0: 4, 1: 0})
    assert g.partitions == [0, 1]
    assert g.committed(0) == 0  # the existing partition keeps its state
    assert g.in_flight(0) == 2
    assert g.committed(1) == 0


def test_switching_to_key_ordering_indexes_records_already_read(log: ListLog) -> None:
    g = group()
    out = fetch(g, log, now=0, n=2)
    g.nack([d.lease for d in out], now_ms=1)
    g.reconfigure(GroupConfig(ack_wait_ms=ACK_WAIT, max_deliver=5, ordering="key"))
    again = fetch(g, log, now=2, n=10)  # no KeyError; records come back
    assert offsets(again)[:2] == [0, 1]


def test_a_position_past_the_log_end_moves_back() -> None:
    g = ConsumerGroup("t", "g", GroupConfig(), {0: (10, [])})
    assert g.clamp(0, 0, 3)
    assert g.committed(0) == 3
    assert not g.clamp(0, 0, 3)


def test_acks_and_deliveries_past_the_log_end_are_forgotten() -> None:
    # A power cut took back offsets 6 on; the group's saved state had acked 7 and 9 and
    # delivered 8. Records appended there after the restart are new to it.
    g = ConsumerGroup("t", "g", GroupConfig(), {0: (3, [4, 7, 9], [(5, 1, 0), (8, 2, 0)])})
    assert g.clamp(0, 0, 6)
    assert g.positions()[0] == (3, [4], [(5, 1, 0)])
    assert not g.clamp(0, 0, 6)


def test_skipped_offsets_are_done_never_delivered_and_noted() -> None:
    log = ListLog()
    for _ in range(10):
        log.add()
    del log.parts[0][3:6]  # offsets 3 to 5 were lost to damage

    async def read(p: int, offset: int, n: int) -> Sequence[tuple[int, int, bytes]]:
        return [r for r in log.parts[p] if r[0] >= offset][:n]

    g = group()
    got, _ = drive(g.fetch(0, 10, read))
    assert offsets(got) == [0, 1, 2, 6, 7, 8, 9]
    assert g.skip(0, 3, 6, "batch fails its CRC") == 3
    assert g.skipped == [(0, 3, 6, "batch fails its CRC")]
    assert g.skipped_events == 3
    g.ack([d.lease for d in got if d.offset > 2])
    assert g.committed(0) == 0  # 0 to 2 still leased
    g.ack([d.lease for d in got if d.offset <= 2])
    assert g.positions() == {0: (10, [], [])}
    # a range already done changes nothing and is not noted again
    assert g.skip(0, 3, 6, "again") == 0
    assert g.skipped_events == 3


def test_a_skip_at_the_committed_offset_moves_it_past_the_range() -> None:
    g = group()
    assert g.skip(0, 0, 4, "lost") == 4
    assert (g.committed(0), g.fetched(0)) == (4, 4)


def test_a_skip_never_passes_a_record_still_pending() -> None:
    log = ListLog()
    for _ in range(2):
        log.add()
    g = group()
    got = fetch(g, log, 0, n=2)
    assert offsets(got) == [0, 1]
    # a range that claims a leased record: that record stays pending, the rest is done
    assert g.skip(0, 0, 4, "stale") == 2
    assert g.committed(0) == 0
    g.ack([d.lease for d in got])
    assert g.committed(0) == 4


def restarted(g: ConsumerGroup, **config: Any) -> ConsumerGroup:
    """A new group from what ``g`` saved: what a restart of the hub makes."""
    config.setdefault("ack_wait_ms", ACK_WAIT)
    return ConsumerGroup("orders", "g", GroupConfig(**config), g.positions())


def test_delivery_counts_and_nack_delays_outlive_a_restart() -> None:
    log = ListLog()
    log.add()
    g = group()
    (d,) = fetch(g, log, now=0)
    assert g.nack([d.lease], now_ms=0, delay_ms=500) == []
    assert g.positions() == {0: (0, [], [(0, 1, 500)])}
    again = restarted(g)
    assert fetch(again, log, now=100) == []  # still waiting out its delay
    (d2,) = fetch(again, log, now=500)
    assert (d2.offset, d2.deliveries) == (0, 2)


def test_a_lease_open_at_a_restart_counts_and_is_due_at_once() -> None:
    log = ListLog()
    log.add()
    g = group()
    fetch(g, log, now=0)
    assert g.positions() == {0: (0, [], [(0, 1, 0)])}
    (d,) = fetch(restarted(g), log, now=1)
    assert d.deliveries == 2


def test_a_record_at_max_deliver_before_a_restart_is_dead_lettered_not_delivered() -> None:
    log = ListLog()
    log.add()
    g = group(max_deliver=2)
    (d,) = fetch(g, log, now=0)
    g.nack([d.lease], now_ms=0)
    fetch(g, log, now=0)  # the second delivery, then the hub stops
    out, dead = drive(restarted(g, max_deliver=2).fetch(1, 10, log.read))
    assert out == []
    assert [(x.offset, x.deliveries) for x in dead] == [(0, 2)]


def test_a_copy_to_the_dead_letter_topic_found_after_a_restart_is_not_made_again() -> None:
    log = ListLog()
    log.add()
    log.add()
    g = group(max_deliver=1)
    first, second = fetch(g, log, now=0)
    dead = g.nack([first.lease, second.lease], now_ms=0)
    g.mark_dead_letters(dead, 7)
    assert g.positions() == {0: (0, [], [(0, 1, -8), (1, 1, -8)])}
    again = restarted(g, max_deliver=1)
    assert again.dying_since() == 7
    again.dead_lettered_before({(0, 0)})  # found in the dead-letter topic; 1 was not
    assert again.committed(0) == 1
    out, dead = drive(again.fetch(1, 10, log.read))
    assert out == []
    assert [x.offset for x in dead] == [1]


def test_what_an_ack_would_save_is_computed_without_applying_it() -> None:
    log = ListLog()
    for _ in range(3):
        log.add()
    g = group()
    got = fetch(g, log, now=0)
    before = g.positions()
    assert g.ack_positions([got[0].lease, got[2].lease])[0] == {0: (1, [2], [(1, 1, 0)])}
    assert g.nack_positions([got[1].lease], now_ms=5, delay_ms=10) == {
        0: (0, [], [(0, 1, 0), (1, 1, 15), (2, 1, 0)])
    }
    assert g.positions(reset={0: 3}) == {0: (3, [], [])}
    assert g.positions() == before
    assert g.ack([got[0].lease, got[2].lease]) == 2  # the leases are still live
