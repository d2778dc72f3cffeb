"""Ownership leases on a real nats-server: one owner among contenders, renewal,
release, takeover after the holder stops renewing, and a holder whose renewal's
compare-and-set fails stops owning. Lease times are short (a second or less); the
contenders' clocks are a seam where a test needs time to pass at once."""

from __future__ import annotations

import asyncio
import itertools

from tidings.backends.nats import NatsLog
from tidings.backends.nats.leases import Holder, Leases
from tidings.backends.nats.meta import MetaBucket

_n = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _bucket(nats_log: NatsLog) -> MetaBucket:
    return await nats_log.bucket(f"owners{next(_n)}")


async def test_two_contenders_one_owner(nats_log: NatsLog) -> None:
    b = await _bucket(nats_log)
    a = Leases(b, "a", "rpc.a", lease_s=5)
    c = Leases(b, "c", "rpc.c", lease_s=5)
    got = await asyncio.gather(a.claim("g"), c.claim("g"))
    # one took it; the other sees the winner, or (lost the race) nobody yet
    owners = {h for h in got if h is not None}
    assert len(owners) == 1
    (owner,) = owners
    assert owner in (a.me, c.me)
    assert a.holds("g") == (owner == a.me) and c.holds("g") == (owner == c.me)
    assert not (a.holds("g") and c.holds("g"))
    # asked again, the loser names the owner
    loser = c if owner == a.me else a
    assert await loser.claim("g") == owner
    assert await loser.holder("g") == owner


async def test_renewal_keeps_the_lease_past_the_lease_time(nats_log: NatsLog) -> None:
    b = await _bucket(nats_log)
    lost: list[str] = []
    a = Leases(b, "a", "rpc.a", lease_s=0.6, on_lost=lost.append)
    c = Leases(b, "c", "rpc.c", lease_s=0.6)
    a.start()
    try:
        assert await a.claim("g") == a.me
        first = (await b.get("g")).revision  # type: ignore[union-attr]
        for _ in range(8):  # 1.6 s: well past the lease time, renewed meanwhile
            await asyncio.sleep(0.2)
            assert await c.claim("g") == a.me
        assert a.holds("g") and lost == []
        assert (await b.get("g")).revision > first  # type: ignore[union-attr]
    finally:
        await a.close()


async def test_release_lets_a_contender_take_it_at_once(nats_log: NatsLog) -> None:
    b = await _bucket(nats_log)
    a = Leases(b, "a", "rpc.a", lease_s=30)
    c = Leases(b, "c", "rpc.c", lease_s=30)
    assert await a.claim("g") == a.me
    assert await c.claim("g") == a.me
    await a.close()  # a clean stop releases
    assert not a.holds("g")
    entry = await b.get("g")
    assert entry is not None and entry.value is None
    assert await c.claim("g") == c.me  # no lease time to wait
    assert c.holds("g")


async def test_takeover_after_the_holder_stops_renewing(nats_log: NatsLog) -> None:
    b = await _bucket(nats_log)
    a_clock, c_clock = Clock(), Clock()
    lost: list[str] = []
    a = Leases(b, "a", "rpc.a", lease_s=10, clock=a_clock, on_lost=lost.append)
    c = Leases(b, "c", "rpc.c", lease_s=10, clock=c_clock)
    assert await a.claim("g") == a.me
    assert await c.claim("g") == a.me  # c starts watching this revision
    c_clock.now += 9.9
    assert await c.claim("g") == a.me  # not yet the lease time on c's clock
    # a's own clock: past half the lease time without a renewal, it stops owning
    a_clock.now += 5.0
    assert not a.holds("g") and lost == ["g"]
    c_clock.now += 0.2
    assert await c.claim("g") == c.me
    assert c.holds("g")
    assert await a.claim("g") == c.me  # a does not take it back


async def test_a_renewal_resets_the_contenders_watch(nats_log: NatsLog) -> None:
    b = await _bucket(nats_log)
    a_clock, c_clock = Clock(), Clock()
    a = Leases(b, "a", "rpc.a", lease_s=10, clock=a_clock)
    c = Leases(b, "c", "rpc.c", lease_s=10, clock=c_clock)
    assert await a.claim("g") == a.me
    assert await c.claim("g") == a.me
    a_clock.now += 2.5
    await a._renew("g")  # what the renewing task does every quarter of the lease time
    c_clock.now += 10.5  # long past the first revision's lease time...
    assert await c.claim("g") == a.me  # ...but a new revision: watched from now
    assert a.holds("g")
    c_clock.now += 10.5
    assert await c.claim("g") == c.me  # that one ran out


async def test_a_holder_whose_renewal_fails_stops_owning(nats_log: NatsLog) -> None:
    b = await _bucket(nats_log)
    lost: list[str] = []
    a = Leases(b, "a", "rpc.a", lease_s=10, on_lost=lost.append)
    assert await a.claim("g") == a.me
    entry = await b.get("g")
    assert entry is not None
    # another node took it (as after a pause longer than the lease time)
    await b.put("g", {"node": "z", "reply": "rpc.z"}, entry.revision)
    assert a.holds("g")  # a has not looked yet
    await a._renew("g")
    assert not a.holds("g") and lost == ["g"]
    assert await a.holder("g") == Holder("z", "rpc.z")
    await a.close()  # releases nothing it does not hold
    assert await a.holder("g") == Holder("z", "rpc.z")


async def test_a_lease_lapsed_for_want_of_renewal_is_taken_back_if_nobody_took_it(
    nats_log: NatsLog,
) -> None:
    b = await _bucket(nats_log)
    a_clock, c_clock = Clock(), Clock()
    lost: list[str] = []
    a = Leases(b, "a", "rpc.a", lease_s=10, clock=a_clock, on_lost=lost.append)
    c = Leases(b, "c", "rpc.c", lease_s=10, clock=c_clock)
    assert await a.claim("g") == a.me
    a_clock.now += 6  # a slow renewal: past half the lease time, a stops owning
    assert not a.holds("g") and lost == ["g"]
    assert await a.claim("g") == a.me  # its own revision, unchanged: taken again
    assert a.holds("g")
    # once another node took it, a lapsed lease is not taken back
    a_clock.now += 6
    assert not a.holds("g")
    assert await c.claim("g") == a.me
    c_clock.now += 10.5
    assert await c.claim("g") == c.me
    assert await a.claim("g") == c.me and not a.holds("g")
