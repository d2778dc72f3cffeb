"""Kill loops: SIGKILL a real hub process at a random moment under load, restart it, check.

Each campaign runs in rounds, each round on a fresh data directory: start the hub,
load it, kill it after a random 0.05 to 0.6 s (from the moment it answered
``/healthz``), start it again on the same directory and port, check everything the
clients were told against what the hub now serves, and go on. Every campaign is
bounded by a number of kills and by a time budget, whichever comes first.

- :func:`publishing`: producers publish batches spread over partitions (keyed),
  resending under the same ids (see ``campaign``).
- :func:`groups`: the same producers, and consumers of a group with
  ``ordering: key`` that ack good events and nack poison ones until they are
  dead-lettered, each exactly once, after exactly ``max_deliver`` deliveries.
- :func:`webhooks`: the same producers, and a webhook (``ordering: key``) to a
  real receiver that fails some first attempts.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from campaign import LogCheck, Producer, Result, absorb, session, verify
from hubapi import expect, put_group, put_topic, read_all
from hubproc import HubProcess, free_port
from receivers import Answer, Received, Receiver

PARTITIONS = 4
KILL_AFTER_S = (0.05, 0.6)
Load = Callable[[aiohttp.ClientSession, asyncio.Event], list[Awaitable[None]]]


async def kill_cycle(
    hub: HubProcess,
    rng: random.Random,
    load: Load,
    res: Result,
    after: Callable[[aiohttp.ClientSession], Awaitable[None]],
) -> None:
    """Load the running hub, kill -9 it at a random moment, start it again, run ``after``."""
    stop = asyncio.Event()
    async with session() as http:
        tasks = [asyncio.ensure_future(t) for t in load(http, stop)]
        await asyncio.sleep(rng.uniform(*KILL_AFTER_S))
        hub.kill()
        res.kills += 1
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    await asyncio.to_thread(hub.start)
    async with session(30) as http:
        await after(http)


# A start-up on a machine busy with other work can take many seconds: waited out,
# not counted as a failure (it is reported if it never comes).
START_TIMEOUT_S = 90.0


def round_hub(root: Path, name: str, fsync: str, *extra: str) -> HubProcess:
    hub = HubProcess(root / name, free_port(), fsync, extra)
    hub.start_timeout = START_TIMEOUT_S
    return hub


def end_round(hub: HubProcess, res: Result) -> None:
    """Stop the round's hub (SIGTERM) and drop its data; a hub that logged a traceback
    is a problem."""
    hub.stop()
    if "Traceback" in hub.log_text():
        text = hub.log_text()
        tail = text[max(0, text.index("Traceback") - 600) :][:2500]
        res.problem(f"the hub logged a traceback:\n{tail}")
    shutil.rmtree(hub.data_dir, ignore_errors=True)
    hub.log_path.unlink(missing_ok=True)


# -- publishing -------------------------------------------------------------------------


async def publishing(
    root: Path, kills: int, seconds: float, seed: int, round_kills: int = 5
) -> Result:
    res = Result("kill loop: publishing")
    rng = random.Random(seed)
    started = time.monotonic()
    deadline = started + seconds
    rounds = 0
    while res.kills < kills and time.monotonic() < deadline:
        fsync = ("interval:5", "always")[rounds % 2]
        hub = round_hub(root, f"publish-{rounds}", fsync)
        rounds += 1
        producers = [Producer(f"w{n}", random.Random(rng.random())) for n in range(4)]
        check = LogCheck("load", PARTITIONS)
        await asyncio.to_thread(hub.start)
        async with session() as http:
            await put_topic(http, hub.base_url, "load", 201, partitions=PARTITIONS)

        def load(http: aiohttp.ClientSession, stop: asyncio.Event) -> list[Awaitable[None]]:
            return [p.run(http, hub.base_url, "load", stop) for p in producers]  # noqa: B023

        async def after(http: aiohttp.ClientSession) -> None:
            await verify(check, producers, http, hub.base_url, res)  # noqa: B023

        try:
            for _ in range(min(round_kills, kills - res.kills)):
                if time.monotonic() >= deadline:
                    break
                await kill_cycle(hub, rng, load, res, after)
        except RuntimeError as exc:  # a hub that did not start: this round ends
            res.problem(str(exc)[:1500])
        finally:
            absorb(producers, res)
            end_round(hub, res)
    res.counts["rounds"] = rounds
    res.seconds = time.monotonic() - started
    return res


# -- consumer groups ----------------------------------------------------------------------

MAX_DELIVER = 3
GROUP = "workers"


class Consumer:
    """What a group's consumers were given: every delivery count of every id, the order of
    first deliveries, and which ids were acked (answered 200)."""

    def __init__(self) -> None:
        self.deliveries: dict[str, list[int]] = {}
        self.first: dict[str, int] = {}  # id -> the rank of its first delivery
        self.acked: set[str] = set()  # acks answered 200
        self.after_ack: list[str] = []  # ids delivered again after their ack was answered
        self.statuses: Counter[str] = Counter()

    async def run(
        self, http: aiohttp.ClientSession, base: str, topic: str, stop: asyncio.Event
    ) -> None:
        url = f"{base}/v1/topics/{topic}/groups/{GROUP}"
        while not stop.is_set():
            try:
                async with http.post(f"{url}/fetch", json={"max": 20, "wait": 0.2}) as resp:
                    body = await resp.json(content_type=None)
                    status = resp.status
                if status != 200:
                    self.statuses[f"fetch {status}"] += 1
                    await asyncio.sleep(0.05)
                    continue
                records = body["records"]
                good, poison = [], []
                for r in records:  # noted before any await: the order of first deliveries
                    eid = r["event"]["id"]
                    if eid in self.acked:
                        self.after_ack.append(eid)
                    self.deliveries.setdefault(eid, []).append(r["deliveries"])
                    self.first.setdefault(eid, len(self.first))
                    (poison if r["event"]["data"].get("poison") else good).append(r)
                if good:
                    async with http.post(
                        f"{url}/ack", json={"leases": [r["lease"] for r in good]}
                    ) as resp:
                        await resp.read()
                        self.statuses[f"ack {resp.status}"] += 1
                        if resp.status == 200:
                            self.acked.update(r["event"]["id"] for r in good)
                if poison:
                    body = {"leases": [r["lease"] for r in poison], "delay": 0.1}
                    async with http.post(f"{url}/nack", json=body) as resp:
                        await resp.read()
                        self.statuses[f"nack {resp.status}"] += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.statuses[type(exc).__name__] += 1
                return


async def groups(
    root: Path, kills: int, seconds: float, seed: int, round_kills: int = 10
) -> Result:
    res = Result("kill loop: consumer groups")
    res.dead_lettered_once = True
    rng = random.Random(seed)
    started = time.monotonic()
    deadline = started + seconds
    rounds = 0
    while res.kills < kills and time.monotonic() < deadline:
        hub = round_hub(root, f"groups-{rounds}", "interval:5")
        rounds += 1
        topic = "jobs"
        producers = [
            Producer(f"w{n}", random.Random(rng.random()), poison=0.05, keys=12)
            for n in range(2)
        ]
        consumer = Consumer()
        check = LogCheck(topic, 3)
        await asyncio.to_thread(hub.start)
        async with session() as http:
            await put_topic(http, hub.base_url, topic, 201, partitions=3)
            await put_group(
                http, hub.base_url, topic, GROUP, 201,
                max_deliver=MAX_DELIVER, ack_wait=1, ordering="key", start="earliest",
            )  # fmt: skip

        def load(http: aiohttp.ClientSession, stop: asyncio.Event) -> list[Awaitable[None]]:
            base = hub.base_url  # noqa: B023
            work: list[Awaitable[None]] = [
                p.run(http, base, topic, stop, pause=0.01)  # noqa: B023
                for p in producers  # noqa: B023
            ]
            work += [consumer.run(http, base, topic, stop) for _ in range(2)]  # noqa: B023
            return work

        async def after(http: aiohttp.ClientSession) -> None:
            await verify(check, producers, http, hub.base_url, res)  # noqa: B023

        try:
            for _ in range(min(round_kills, kills - res.kills)):
                if time.monotonic() >= deadline:
                    break
                await kill_cycle(hub, rng, load, res, after)
            await drain_group(hub, topic, consumer, res)
            async with session(30) as http:
                await check_group(http, hub, topic, producers, consumer, check, res)
        except RuntimeError as exc:  # a hub that did not start: this round ends
            res.problem(str(exc)[:1500])
        finally:
            absorb(producers, res)
            end_round(hub, res)
    res.counts["rounds"] = rounds
    res.seconds = time.monotonic() - started
    return res


async def group_info(http: aiohttp.ClientSession, base: str, topic: str) -> dict[str, Any]:
    async with http.get(f"{base}/v1/topics/{topic}/groups/{GROUP}") as resp:
        return await expect(resp, 200)  # type: ignore[no-any-return]


async def drain_group(hub: HubProcess, topic: str, consumer: Consumer, res: Result) -> None:
    """No more kills: consume until the group has nothing left (or 60 s)."""
    stop = asyncio.Event()
    async with session(30) as http:
        task = asyncio.ensure_future(consumer.run(http, hub.base_url, topic, stop))
        deadline = time.monotonic() + 60
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            info = await group_info(http, hub.base_url, topic)
            if info["lag"] == 0 and info["pending"] == 0:
                break
            await asyncio.sleep(0.2)
        else:
            res.problem(f"the group did not drain in 60 s: lag {info.get('lag')}, "
                        f"pending {info.get('pending')}")
        stop.set()
        await task


async def check_group(
    http: aiohttp.ClientSession,
    hub: HubProcess,
    topic: str,
    producers: list[Producer],
    consumer: Consumer,
    check: LogCheck,
    res: Result,
) -> None:
    """Every acknowledged event was acked by a consumer or dead-lettered; every poison
    event dead-lettered exactly once, after exactly MAX_DELIVER deliveries; keys in order."""
    acked_ids = {eid for p in producers for eid in p.acked}
    events = {eid: ev for p in producers for eid, ev in p.events.items()}
    async with http.get(f"{hub.base_url}/v1/topics/{topic}.dlq") as resp:
        dead = [] if resp.status == 404 else await read_all(http, hub.base_url, f"{topic}.dlq")
    dlq = Counter(r["event"]["id"] for r in dead)
    for eid, n in dlq.items():
        if n > 1:
            res.duplicated += n - 1
            res.dead_lettered_once = False
            res.problem(f"{eid} dead-lettered {n} times")
    for r in dead:
        if r["event"].get("dlqdeliveries") != MAX_DELIVER:
            res.dead_lettered_once = False
            res.problem(f"{r['event']['id']} dead-lettered after "
                        f"{r['event'].get('dlqdeliveries')} deliveries")
    poison = {eid for eid in acked_ids if events[eid]["data"].get("poison")}
    for eid in sorted(poison - set(dlq)):
        res.dead_lettered_once = False
        res.lost += 1
        res.problem(f"poison {eid} was never dead-lettered")
    # The group drained: what a consumer was given was acked (its answer may have been
    # cut off by a kill) or dead-lettered; an event never given and not dead-lettered is lost.
    for eid in sorted(acked_ids - poison - set(consumer.deliveries) - set(dlq)):
        res.lost += 1
        res.problem(f"{eid} was never delivered nor dead-lettered")
    for eid, counts in consumer.deliveries.items():
        # A count may be missing (saved, then the hub died before it answered); none twice.
        if counts != sorted(set(counts)) or max(counts) > MAX_DELIVER:
            res.dead_lettered_once = False
            res.problem(f"{eid} was delivered as {counts}")
    if consumer.after_ack:
        res.duplicated += len(consumer.after_ack)
        res.problem(f"delivered again after an answered ack: {consumer.after_ack[:5]}")
    # ordering: key: no good event is first delivered before an earlier good one of its key
    for ids in check.keyed.values():
        good = [eid for eid in ids if not check.events[eid]["data"].get("poison")]
        ranks = [consumer.first[eid] for eid in good if eid in consumer.first]
        res.out_of_order += sum(1 for a, b in itertools.pairwise(ranks) if b < a)
    res.counts["dead-lettered"] += len(dead)
    res.counts["good events dead-lettered"] += len(set(dlq) - poison)
    res.counts["deliveries"] += sum(len(c) for c in consumer.deliveries.values())
    statuses = {k: v for k, v in consumer.statuses.items() if not k.endswith(" 200")}
    bad = {k: v for k, v in statuses.items() if k[0].islower() and not k.endswith(" 503")}
    if bad:
        res.problem(f"unexpected group answers: {bad}")


# -- webhooks -----------------------------------------------------------------------------

SCHEDULE = "0,0.1,0.2,0.3,0.5,1,1,1,1,1"
WEBHOOK_ARGS = (
    "--webhook-allow-net", "127.0.0.0/8",
    "--webhook-retry-schedule", SCHEDULE,
    "--webhook-timeout", "1",
)  # fmt: skip


class Deliveries:
    """The receiver's script: a first or second attempt fails now and then (500); it
    notes every event answered 2xx, in arrival order."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.tries: Counter[str] = Counter()
        self.succeeded: Counter[str] = Counter()
        self.first_success: dict[str, int] = {}

    def __call__(self, r: Received) -> Answer:
        eid = r.event["id"]
        n = self.tries[eid]
        self.tries[eid] += 1
        if n < 2 and self.rng.random() < 0.15:
            return Answer(500)
        self.succeeded[eid] += 1
        self.first_success.setdefault(eid, len(self.first_success))
        return Answer(200)


async def webhooks(
    root: Path, kills: int, seconds: float, seed: int, round_kills: int = 10
) -> Result:
    res = Result("kill loop: webhooks")
    rng = random.Random(seed)
    started = time.monotonic()
    deadline = started + seconds
    rounds = 0
    receiver = await Receiver().start()
    try:
        while res.kills < kills and time.monotonic() < deadline:
            hub = round_hub(root, f"webhooks-{rounds}", "interval:5", *WEBHOOK_ARGS)
            rounds += 1
            topic = "hooks"
            script = Deliveries(random.Random(rng.random()))
            receiver.answer = script
            producers = [
                Producer(f"w{n}", random.Random(rng.random()), keys=12, max_batch=5)
                for n in range(2)
            ]
            check = LogCheck(topic, 3)
            await asyncio.to_thread(hub.start)
            async with session() as http:
                await put_topic(http, hub.base_url, topic, 201, partitions=3)
                body = {"url": receiver.url, "topics": [topic], "ordering": "key", "concurrency": 8}
                async with http.post(f"{hub.base_url}/v1/webhooks", json=body) as resp:
                    wh = await expect(resp, 201)

            def load(http: aiohttp.ClientSession, stop: asyncio.Event) -> list[Awaitable[None]]:
                return [
                    p.run(http, hub.base_url, topic, stop, pause=0.01)  # noqa: B023
                    for p in producers  # noqa: B023
                ]

            async def after(http: aiohttp.ClientSession) -> None:
                await verify(check, producers, http, hub.base_url, res)  # noqa: B023

            try:
                for _ in range(min(round_kills, kills - res.kills)):
                    if time.monotonic() >= deadline:
                        break
                    await kill_cycle(hub, rng, load, res, after)
                await check_webhook(hub, wh["id"], topic, producers, script, check, res)
            except RuntimeError as exc:  # a hub that did not start: this round ends
                res.problem(str(exc)[:1500])
            finally:
                absorb(producers, res)
                end_round(hub, res)
    finally:
        await receiver.close()
    res.counts["rounds"] = rounds
    res.seconds = time.monotonic() - started
    return res


async def check_webhook(
    hub: HubProcess,
    wh: str,
    topic: str,
    producers: list[Producer],
    script: Deliveries,
    check: LogCheck,
    res: Result,
) -> None:
    """Every acknowledged event reached the receiver (2xx), and each key's events
    first succeeded in their log order."""
    acked = {eid for p in producers for eid in p.acked}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not acked <= set(script.succeeded):
        await asyncio.sleep(0.1)
    for eid in sorted(acked - set(script.succeeded)):
        res.lost += 1
        res.problem(f"acknowledged {eid} never reached the receiver")
    for ids in check.keyed.values():
        ranks = [script.first_success[eid] for eid in ids if eid in script.first_success]
        res.out_of_order += sum(1 for a, b in itertools.pairwise(ranks) if b < a)
    async with session() as http, http.get(f"{hub.base_url}/v1/webhooks/{wh}/dead-letters") as r:
        dead = (await expect(r, 200))["dead_letters"]
    if dead:
        res.problem(f"{len(dead)} events dead-lettered by the webhook")
    res.counts["deliveries answered 2xx"] += sum(script.succeeded.values())
    res.counts["delivered again (at least once)"] += sum(
        n - 1 for n in script.succeeded.values()
    )
