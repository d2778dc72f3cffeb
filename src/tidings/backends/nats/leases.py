"""Ownership leases on KV keys: which node serves a thing that one node at a time must
serve (a consumer group, a webhook endpoint).

A lease is a key of a bucket (``td_owners``) whose value names the holder: its node
id and the subject it answers requests on. No clocks are compared between machines
and no consensus is made here; the KV's compare-and-set decides every change:

- **Taken** by compare-and-set on "absent" (never written, or deleted), or on the
  revision a contender has seen unchanged for the lease time, measured on the
  contender's own monotonic clock from the first time it read that revision.
- **Renewed** by the holder, a compare-and-set on its last revision every quarter of
  the lease time: each renewal is a new revision, so a contender starts over.
- **Lost** when the holder has not renewed for half the lease time (its own clock:
  a contender waits the whole lease time from a revision it read after the renewal),
  or when a renewal's compare-and-set fails (someone else took it). The holder stops
  acting as owner at once and is told through ``on_lost``. A lease lost for lack of
  a timely renewal (a slow answer, a pause) may be taken again by the same node,
  by compare-and-set on the revision it last wrote: that succeeds only if nobody
  took it meanwhile.
- **Released** on a clean shutdown: deleted by compare-and-set, so a contender takes
  it at once instead of after the lease time.

The holder checks :meth:`Leases.holds` before each act as owner. What the owner
saves must be fenced as well (a holder paused past half the lease time may still
have a write in flight): the owners of consumer groups save by compare-and-set on
the revision of their own last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from tidings.backends.nats.meta import MetaBucket
from tidings.errors import Conflict, StorageUnavailable, TidingsError

logger = logging.getLogger("tidings.nats")

LEASES_BUCKET = "td_owners"
DEFAULT_LEASE_S = 10.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: a node id and the subject that node answers requests on."""

    node: str
    reply: str


@dataclass
class _Held:
    revision: int
    renewed: float  # monotonic time of the taking or last renewal that was acknowledged
    sent: float  # monotonic time that last acknowledged write was sent


class Leases:
    """The leases one node takes, renews and releases in one bucket.

    ``node`` and ``reply`` are what a taken lease says; ``lease_s`` is the lease time;
    ``clock`` the node's monotonic clock (a seam for tests); ``on_lost(key)`` is called
    once when a lease this node held is lost.
    """

    def __init__(
        self,
        bucket: MetaBucket,
        node: str,
        reply: str,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        clock: Callable[[], float] = time.monotonic,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        if not lease_s > 0:
            raise ValueError("lease_s must be positive")
        self.bucket = bucket
        self.me = Holder(node, reply)
        self.lease_s = lease_s
        self.clock = clock
        self.on_lost = on_lost
        self._held: dict[str, _Held] = {}
        self._seen: dict[str, tuple[int, float]] = {}  # key -> (revision, first seen)
        self._lapsed: dict[str, int] = {}  # key -> revision of a lease lost for lack of renewal
        self._renewing: asyncio.Task[None] | None = None
        self._taking: dict[str, asyncio.Lock] = {}

    # -- life --------------------------------------------------------------------------

    def start(self) -> None:
        """Renew the leases held, every quarter of the lease time, until closed."""
        if self._renewing is None:
            self._renewing = asyncio.get_running_loop().create_task(self._renew_loop())

    async def close(self, release: bool = True) -> None:
        """Stop renewing; with ``release``, delete each lease held (by compare-and-set)."""
        task, self._renewing = self._renewing, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if release:
            for key in list(self._held):
                await self.release(key)
            for key, revision in list(self._lapsed.items()):
                with contextlib.suppress(TidingsError):  # unless taken since
                    await self.bucket.delete(key, revision)
        self._held.clear()
        self._lapsed.clear()

    # -- the holder's side -------------------------------------------------------------

    def holds(self, key: str) -> bool:
        """Whether this node may act as the owner of ``key`` now: it took or renewed the
        lease less than half the lease time ago (on its own clock), and no renewal
        failed. Counted from when the write was sent, not from its answer."""
        held = self._held.get(key)
        if held is None:
            return False
        if self.clock() - held.sent < self.lease_s / 2:
            return True
        self._lose(key, "not renewed within half the lease time")
        self._lapsed[key] = held.revision
        return False

    def held(self) -> list[str]:
        """The keys whose leases this node holds now."""
        return [k for k in list(self._held) if self.holds(k)]

    async def release(self, key: str) -> None:
        """Give the lease up (a delete by compare-and-set): a contender takes it at once."""
        held = self._held.pop(key, None)
        if held is None:
            return
        with contextlib.suppress(TidingsError):  # taken meanwhile, or unreachable: it runs out
            await self.bucket.delete(key, held.revision)

    def forget(self, key: str) -> int | None:
        """Stop holding ``key`` now, without ``on_lost`` (the caller knows): the
        revision this node wrote last, for a delete by compare-and-set, or None."""
        held = self._held.pop(key, None)
        self._lapsed.pop(key, None)
        return None if held is None else held.revision

    def _lose(self, key: str, why: str) -> None:
        if self._held.pop(key, None) is None:
            return
        logger.warning("lease %s of %s lost: %s", key, self.bucket.name, why)
        if self.on_lost is not None:
            self.on_lost(key)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 4)
            keys = list(self._held)
            if keys:
                await asyncio.gather(*(self._renew(k) for k in keys), return_exceptions=True)

    async def _renew(self, key: str) -> None:
        held = self._held.get(key)
        if held is None or not self.holds(key):
            return
        sent = self.clock()
        try:
            revision = await self.bucket.put(key, self._value(), held.revision)
        except Conflict:
            self._lose(key, "renewal refused: taken by another node")  # not taken back
            return
        except TidingsError as exc:  # unreachable: it runs out after half the lease time
            logger.warning("lease %s of %s not renewed: %s", key, self.bucket.name, exc)
            return
        if self._held.get(key) is held:
            held.revision, held.renewed, held.sent = revision, self.clock(), sent
        elif key in self._lapsed:  # lapsed while the renewal was on its way
            self._lapsed[key] = revision

    # -- a contender's side ------------------------------------------------------------

    async def claim(self, key: str) -> Holder | None:
        """Take ``key``'s lease if it is free or ran out; the holder after this attempt:
        this node's :attr:`me`, another node, or None if another node's lease is being
        taken or released meanwhile (ask again).

        Another node's lease runs out once its revision is unchanged for the lease
        time since this node first read it; each call looks again."""
        if self.holds(key):
            return self.me
        async with self._taking.setdefault(key, asyncio.Lock()):  # one attempt at a time
            if self.holds(key):
                return self.me
            return await self._claim(key)

    async def _claim(self, key: str) -> Holder | None:
        entry = await self.bucket.get(key)
        now = self.clock()
        lapsed = self._lapsed.pop(key, None)
        if entry is not None and entry.value is not None:
            holder = _holder(entry.value)
            if holder == self.me and lapsed == entry.revision:
                return await self._take(key, entry.revision, now)  # nobody took it since
            seen = self._seen.get(key)
            if seen is None or seen[0] != entry.revision:
                self._seen[key] = (entry.revision, now)
                return holder
            if now - seen[1] < self.lease_s:
                return holder
            # unchanged for the lease time on this node's clock: run out
        return await self._take(key, 0 if entry is None else entry.revision, now)

    async def _take(self, key: str, revision: int, now: float) -> Holder | None:
        self._seen.pop(key, None)
        try:
            taken = await self.bucket.put(key, self._value(), revision)
        except Conflict:
            return None  # someone else took or renewed it: look again
        self._held[key] = _Held(taken, self.clock(), now)
        return self.me

    async def holder(self, key: str) -> Holder | None:
        """Who holds ``key`` as the bucket says now (None: nobody), without taking it."""
        if self.holds(key):
            return self.me
        entry = await self.bucket.get(key)
        if entry is None or entry.value is None:
            return None
        return _holder(entry.value)

    def _value(self) -> dict[str, str]:
        return {"node": self.me.node, "reply": self.me.reply}


def _holder(value: object) -> Holder:
    if not isinstance(value, dict) or not isinstance(value.get("node"), str):
        raise StorageUnavailable(f"a lease holds {value!r}, not a node")
    return Holder(value["node"], str(value.get("reply", "")))
