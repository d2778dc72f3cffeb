"""What the reliability campaigns share: their result row, a producer that retries, a log check.

A :class:`Producer` publishes keyed batches spread over partitions, one request at
a time, and keeps what each got back. A batch that got no 202 (the hub died under
it, or refused it) is sent again, same ids, before anything new; now and then an
acknowledged batch is sent again too, as a producer that lost the answer would.
Either way the dedupe window must answer the first positions.

A :class:`LogCheck` reads a topic forward from where it last stopped and checks
what the producers were told: every acknowledged id is at its acknowledged
position, no id is stored twice, offsets have no gaps, each producer's events of
one key are in the order it sent them, and a batch that got no answer is in the
log whole or not at all.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from hubapi import BATCH, read

# The statuses a producer waits out and retries: the hub starting, full or going away.
RETRIED = {503}


@dataclass
class Result:
    """One row of the summary table.

    ``dead_lettered_once`` is None where a campaign has no dead letters to count;
    ``problems`` names anything else that went wrong (each one fails the suite).
    """

    campaign: str
    kills: int = 0
    cuts: int = 0  # power cuts: not SIGKILLs
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    torn: int = 0
    dead_lettered_once: bool | None = None
    seconds: float = 0.0
    ran: bool = True
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # figures for the notes

    @property
    def clean(self) -> bool:
        return (
            not (self.lost or self.duplicated or self.out_of_order or self.torn)
            and self.dead_lettered_once is not False
            and not self.problems
        )

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "ran": self.ran,
            "kills": self.kills,
            "cuts": self.cuts,
            "acknowledged": self.acknowledged,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "torn": self.torn,
            "dead_lettered_once": self.dead_lettered_once,
            "seconds": round(self.seconds, 1),
            "clean": self.clean,
            "notes": self.notes,
            "counts": dict(self.counts),
            "problems": self.problems,
        }


def session(timeout: float = 10.0) -> aiohttp.ClientSession:
    """A session that keeps no connection: the hub is killed under it."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


Event = dict[str, Any]


class Producer:
    """One publisher: batches of 1 to ``max_batch`` events, each with a key of its own
    (``unkeyed`` of them with none), so most batches spread over partitions."""

    def __init__(
        self,
        name: str,
        rng: random.Random,
        *,
        keys: int = 16,
        max_batch: int = 10,
        unkeyed: float = 0.2,
        poison: float = 0.0,
        resend: float = 0.1,
        data_bytes: int = 0,
    ) -> None:
        self.name = name
        self.rng = rng
        self.keys = keys
        self.max_batch = max_batch
        self.unkeyed = unkeyed
        self.poison = poison
        self.resend = resend
        self.pad = "x" * data_bytes
        self.seq = 0
        self.unanswered: list[Event] | None = None  # the batch in flight when it was cut off
        self.last_acked: list[Event] | None = None
        self.acked: dict[str, tuple[int, int]] = {}  # id -> (partition, offset)
        self.events: dict[str, Event] = {}  # every event acknowledged, by id
        self.new_acks: list[str] = []  # acknowledged since the last check
        self.resent = 0  # batches sent again
        self.deduped = 0  # events answered as duplicates
        self.moved = 0  # events a resend placed elsewhere than their first answer
        self.statuses: Counter[str] = Counter()

    def _batch(self) -> list[Event]:
        self.seq += 1
        events = []
        for j in range(self.rng.randint(1, self.max_batch)):
            data: dict[str, Any] = {"p": self.name, "s": self.seq, "j": j}
            if self.pad:
                data["pad"] = self.pad
            if self.poison and self.rng.random() < self.poison:
                data["poison"] = True
            event: Event = {"type": "load.tick", "id": f"{self.name}-{self.seq}-{j}", "data": data}
            if self.rng.random() >= self.unkeyed:
                event["partitionkey"] = f"key-{self.rng.randrange(self.keys)}"
            events.append(event)
        return events

    async def run(
        self,
        http: aiohttp.ClientSession,
        base: str,
        topic: str,
        stop: asyncio.Event,
        *,
        max_batches: int = 1_000_000,
        pause: float = 0.0,
    ) -> None:
        """Publish until ``stop`` is set or the hub goes away (at most ``max_batches``)."""
        for _ in range(max_batches):
            if stop.is_set():
                return
            resend = False
            if self.unanswered is not None:
                batch = self.unanswered
                self.resent += 1
            elif self.last_acked is not None and self.rng.random() < self.resend:
                batch, resend = self.last_acked, True
                self.resent += 1
            else:
                batch = self.unanswered = self._batch()
            try:
                async with http.post(
                    f"{base}/v1/topics/{topic}/events",
                    data=orjson.dumps(batch),
                    headers={"content-type": BATCH},
                ) as resp:
                    body = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.statuses[type(exc).__name__] += 1
                return
            self.statuses[str(status)] += 1
            if status != 202:
                if status in RETRIED:
                    await asyncio.sleep(0.05)
                    continue
                return  # another answer: counted in statuses, named by the campaign
            self._answered(batch, orjson.loads(body)["events"], resend)
            if pause:
                await asyncio.sleep(pause)

    def _answered(self, batch: list[Event], positions: list[dict[str, Any]], resend: bool) -> None:
        for event, pos in zip(batch, positions, strict=True):
            eid = event["id"]
            where = (pos["partition"], pos["offset"])
            if pos.get("duplicate"):
                self.deduped += 1
            first = self.acked.get(eid)
            if first is None:
                self.acked[eid] = where
                self.events[eid] = event
                self.new_acks.append(eid)
            elif first != where:
                self.moved += 1
        if not resend:
            self.unanswered = None
            self.last_acked = batch

    @property
    def errors(self) -> dict[str, int]:
        """Answers that are neither a 202 nor a refusal to retry, nor a cut connection."""
        return {
            s: n
            for s, n in self.statuses.items()
            if s.isdigit() and s != "202" and int(s) not in RETRIED
        }


class LogCheck:
    """A topic read forward from where the last check stopped, against what producers got."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic = topic
        self.end = [0] * partitions
        self.where: dict[str, tuple[int, int]] = {}  # id -> its first position in the log
        self.events: dict[str, Event] = {}
        self.last: dict[tuple[str, str], tuple[int, int]] = {}  # (producer, key) -> (seq, j)
        self.keyed: dict[tuple[int, str], list[str]] = {}  # (partition, key) -> ids in log order
        self.skipped: list[dict[str, Any]] = []
        self.read_s = 0.0

    async def advance(self, http: aiohttp.ClientSession, base: str, res: Result) -> None:
        """Read every record past the last check; count duplicates, gaps, order."""
        started = time.monotonic()
        token = ",".join(f"{p}:{o}" for p, o in enumerate(self.end))
        for _ in range(100_000):
            page = await read(http, base, self.topic, limit=2000, **{"from": token})
            self.skipped.extend(page.get("skipped", []))
            records = page["records"]
            if not records:
                break
            for r in records:
                self._record(r, res)
            token = page["next"]
        self.read_s += time.monotonic() - started

    def _record(self, r: dict[str, Any], res: Result) -> None:
        p, offset, event = r["partition"], r["offset"], r["event"]
        if offset != self.end[p] and not self._was_skipped(p, self.end[p]):
            res.problem(f"{self.topic}/{p}: offset {offset} follows {self.end[p] - 1}")
        self.end[p] = offset + 1
        eid = event["id"]
        if eid in self.where:
            res.duplicated += 1
            res.problem(f"{eid} stored twice: at {self.where[eid]} and {(p, offset)}")
            return
        self.where[eid] = (p, offset)
        self.events[eid] = event
        data, key = event.get("data"), event.get("partitionkey")
        if key is None or not isinstance(data, dict) or "p" not in data:
            return
        self.keyed.setdefault((p, key), []).append(eid)
        order = (data["s"], data["j"])
        last = self.last.get((data["p"], key))
        if last is not None and order < last:
            res.out_of_order += 1
            res.problem(f"{eid} of key {key} stored after {data['p']}'s event {last}")
        self.last[(data["p"], key)] = order

    def _was_skipped(self, partition: int, offset: int) -> bool:
        return any(
            s["partition"] == partition and s["from"] <= offset < s["to"] for s in self.skipped
        )

    def check_acks(self, producers: list[Producer], res: Result) -> None:
        """Every id acknowledged since the last check is at the position it was given."""
        for prod in producers:
            for eid in prod.new_acks:
                found = self.where.get(eid)
                if found is None:
                    res.lost += 1
                    res.problem(f"acknowledged {eid} at {prod.acked[eid]} is not in the log")
                elif found != prod.acked[eid]:
                    res.lost += 1
                    res.problem(f"acknowledged {eid} at {prod.acked[eid]} reads back at {found}")
            prod.new_acks.clear()

    def check_unanswered(self, producers: list[Producer], res: Result) -> None:
        """A batch that got no answer is in the log whole or not at all."""
        for prod in producers:
            batch = prod.unanswered
            if batch is None:
                continue
            kept = [e["id"] in self.where for e in batch]
            if any(kept) and not all(kept):
                res.torn += 1
                res.problem(
                    f"{prod.name}'s batch {batch[0]['id']}.. kept {sum(kept)} of {len(kept)}"
                )


async def verify(
    check: LogCheck, producers: list[Producer], http: aiohttp.ClientSession, base: str, res: Result
) -> None:
    """After a restart: read what is new, then hold every answer the producers got against it."""
    await check.advance(http, base, res)
    check.check_acks(producers, res)
    check.check_unanswered(producers, res)


def absorb(producers: list[Producer], res: Result) -> None:
    """At the end of a round: what its producers were told, into the campaign's figures."""
    res.acknowledged += sum(len(p.acked) for p in producers)
    res.counts["batches resent"] += sum(p.resent for p in producers)
    res.counts["answered as duplicates"] += sum(p.deduped for p in producers)
    moved = sum(p.moved for p in producers)
    if moved:
        res.duplicated += moved
        res.problem(f"{moved} resent events were given a second position")
    errors: Counter[str] = Counter()
    for p in producers:
        errors.update(p.errors)
    if errors:
        res.problem(f"unexpected publish answers: {dict(errors)}")
