"""The JetStream log against bare nats-py: ``python bench/nats_log.py [--records N]``.

Starts a real nats-server (``sync_interval: always``; ``--replicas 3`` starts a
3-node cluster) on loopback, then, in the same run and on streams of the same
configuration:

- append: ``NatsLog.append`` in batches of ``--batch`` records (each record with its
  ``Nats-Msg-Id``; a batch is one atomic JetStream batch), beside bare nats-py doing
  the same atomic batches by hand (the ceiling), and beside ``js.publish_async`` of
  the same records, a batch's acks awaited together (no batch headers);
- read: ``NatsLog.read`` of the whole partition (batched direct gets of 1000), beside
  three bare nats-py reads of the same records: batched direct gets, an ordered push
  consumer, and a pull consumer fetching 1000 at a time.

Each figure is the best of ``--rounds``; ratios are ours over the bare ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import nats
import orjson
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.errors import ServiceUnavailableError

from tidings.backends.nats import NatsLog, NatsSettings, names
from tidings.cluster.natsproc import NatsCluster, NatsServer


def _payloads(n: int) -> list[bytes]:
    return [
        orjson.dumps({
            "specversion": "1.0", "id": f"{i:032x}", "source": "/bench", "type": "order.placed",
            "time": "2026-12-05T10:00:00.000Z", "data": {"n": i, "note": "x" * 80},
        })
        for i in range(n)
    ]  # fmt: skip


async def ours_append(log: NatsLog, topic: str, payloads: list[bytes], batch: int) -> float:
    t = time.perf_counter()
    for b in range(0, len(payloads), batch):
        chunk = payloads[b : b + batch]
        await log.append(topic, 0, chunk, [f"{topic}-{b + i}" for i in range(len(chunk))])
    return len(payloads) / (time.perf_counter() - t)


async def bare_append(nc: nats.NATS, topic: str, payloads: list[bytes], batch: int) -> float:
    js = nc.jetstream()
    subject = names.subject(topic, 0)
    t = time.perf_counter()
    for b in range(0, len(payloads), batch):
        futs = [
            await js.publish_async(subject, p, headers={"Nats-Msg-Id": f"{topic}-{b + i}"})
            for i, p in enumerate(payloads[b : b + batch])
        ]
        await asyncio.gather(*futs)
    return len(payloads) / (time.perf_counter() - t)


async def bare_atomic(nc: nats.NATS, topic: str, payloads: list[bytes], batch: int) -> float:
    """The same atomic batches by hand: batch headers on each message, one reply, on the
    commit (nats-py 2.16 has no call for them)."""
    subject = names.subject(topic, 0)
    t = time.perf_counter()
    for b in range(0, len(payloads), batch):
        chunk = payloads[b : b + batch]
        for i, p in enumerate(chunk):
            hdrs = {
                "Nats-Batch-Id": f"{topic}-{b}",
                "Nats-Batch-Sequence": str(i + 1),
                "Nats-Msg-Id": f"{topic}-{b + i}",
            }
            if i == len(chunk) - 1:
                hdrs["Nats-Batch-Commit"] = "1"
                ack = await nc.request(subject, p, timeout=10, headers=hdrs)
                assert b'"count"' in ack.data, ack.data
            else:
                await nc.publish(subject, p, headers=hdrs)
    return len(payloads) / (time.perf_counter() - t)


async def ours_read(log: NatsLog, topic: str, n: int) -> float:
    t = time.perf_counter()
    offset = 0
    while offset < n:
        offset = (await log.read(topic, 0, offset, max_records=1000, max_bytes=8 << 20))[-1][0] + 1
    return n / (time.perf_counter() - t)


async def bare_direct(nc: nats.NATS, topic: str, n: int) -> float:
    stream = names.stream_name(topic, 0)
    inbox = nc.new_inbox()
    state = {"next": 1}
    batch_done: asyncio.Future[None] | None = None

    async def on_msg(msg: Msg) -> None:
        if msg.headers and msg.headers.get("Status"):
            if batch_done is not None and not batch_done.done():
                batch_done.set_result(None)
        else:
            state["next"] = int(msg.headers["Nats-Sequence"]) + 1  # type: ignore[index]

    sub = await nc.subscribe(inbox, cb=on_msg, pending_msgs_limit=100_000)
    t = time.perf_counter()
    while state["next"] <= n:
        batch_done = asyncio.get_running_loop().create_future()
        req = orjson.dumps({"seq": state["next"], "batch": 1000, "max_bytes": 8 << 20})
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", req, reply=inbox)
        await asyncio.wait_for(batch_done, 5)
    rate = n / (time.perf_counter() - t)
    await sub.unsubscribe()
    return rate


async def bare_ordered(nc: nats.NATS, topic: str, n: int) -> float:
    js = nc.jetstream()
    done = asyncio.get_running_loop().create_future()
    seen = 0

    async def on_msg(msg: object) -> None:
        nonlocal seen
        seen += 1
        if seen == n and not done.done():
            done.set_result(None)

    t = time.perf_counter()
    sub = await js.subscribe(
        names.subject(topic, 0), stream=names.stream_name(topic, 0), cb=on_msg,
        ordered_consumer=True, pending_msgs_limit=100_000,
    )  # fmt: skip
    await asyncio.wait_for(done, 120)
    rate = n / (time.perf_counter() - t)
    await sub.unsubscribe()
    return rate


async def bare_fetch(nc: nats.NATS, topic: str, n: int) -> float:
    js = nc.jetstream()
    t = time.perf_counter()
    sub = await js.pull_subscribe(
        names.subject(topic, 0), stream=names.stream_name(topic, 0),
        config=api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE, num_replicas=1, mem_storage=True
        ),
    )  # fmt: skip
    seen = 0
    while seen < n:
        try:
            seen += len(await sub.fetch(1000, timeout=5))
        except NatsTimeoutError:  # an empty fetch raises; nothing was lost
            continue
        except ServiceUnavailableError:  # a new consumer without its leader yet
            await asyncio.sleep(0.01)
    rate = n / (time.perf_counter() - t)
    await sub.unsubscribe()
    return rate


SHORT_READS = 200
SHORT = 100  # records per short read, as a group fetch or a tail takes them


def _offsets(n: int) -> list[int]:
    step = max(1, (n - SHORT) // SHORT_READS)
    return [(i * step) % (n - SHORT) for i in range(SHORT_READS)]


async def ours_short(log: NatsLog, topic: str, n: int) -> float:
    t = time.perf_counter()
    for offset in _offsets(n):
        assert len(await log.read(topic, 0, offset, max_records=SHORT)) == SHORT
    return SHORT_READS * SHORT / (time.perf_counter() - t)


async def bare_short_ordered(nc: nats.NATS, topic: str, n: int) -> float:
    """An ordered consumer per read, from the read's offset, until SHORT records came."""
    js = nc.jetstream()
    t = time.perf_counter()
    for offset in _offsets(n):
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        seen = 0

        async def on_msg(msg: Msg, done: asyncio.Future[None] = done) -> None:
            nonlocal seen
            seen += 1
            if seen == SHORT and not done.done():
                done.set_result(None)

        sub = await js.subscribe(
            names.subject(topic, 0), stream=names.stream_name(topic, 0), cb=on_msg,
            ordered_consumer=True,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=offset + 1
            ),
        )  # fmt: skip
        await asyncio.wait_for(done, 30)
        await sub.unsubscribe()
    return SHORT_READS * SHORT / (time.perf_counter() - t)


async def bare_short_fetch(nc: nats.NATS, topic: str, n: int) -> float:
    """A pull consumer per read, from the read's offset, one fetch of SHORT."""
    js = nc.jetstream()
    t = time.perf_counter()
    for offset in _offsets(n):
        sub = await js.pull_subscribe(
            names.subject(topic, 0), stream=names.stream_name(topic, 0),
            config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE, opt_start_seq=offset + 1,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, num_replicas=1,
                mem_storage=True,
            ),
        )  # fmt: skip
        got = 0
        while got < SHORT:
            try:
                got += len(await sub.fetch(SHORT - got, timeout=5))
            except NatsTimeoutError:  # an empty fetch raises; nothing was lost
                continue
            except ServiceUnavailableError:  # a new consumer without its leader yet
                await asyncio.sleep(0.01)
        await sub.unsubscribe()
    return SHORT_READS * SHORT / (time.perf_counter() - t)


async def run(records: int, batch: int, rounds: int, replicas: int, sync: str, root: Path) -> None:
    if replicas == 1:
        server = NatsServer(root, "bench", sync=sync).start()
        server.wait_ready()
        urls = [server.url]
        stop = server.kill
    else:
        cluster = NatsCluster(root, size=replicas, sync=sync).start()
        urls = cluster.urls
        stop = cluster.close
    try:
        log = await NatsLog.connect(NatsSettings(servers=tuple(urls)), replicas=replicas)
        nc = await nats.connect(urls)
        payloads = _payloads(records)
        best: dict[str, float] = {}

        def keep(name: str, rate: float) -> None:
            best[name] = max(best.get(name, 0.0), rate)

        for r in range(rounds):
            ours_topic, bare_topic = f"ours{r}", f"bare{r}"
            await log.create_topic(ours_topic, 1)
            await log.create_topic(bare_topic, 1)
            await log.create_topic(bare_topic + "a", 1)
            runs = [
                ("append ours", ours_append(log, ours_topic, payloads, batch)),
                ("append bare atomic", bare_atomic(nc, bare_topic + "a", payloads, batch)),
                ("append bare publish_async", bare_append(nc, bare_topic, payloads, batch)),
            ]
            for name, coro in runs[r % 3 :] + runs[: r % 3]:  # take turns going first
                keep(name, await coro)
            keep("read ours (direct get)", await ours_read(log, ours_topic, records))
            # the bare reads' consumers filter on the first subject: they read the
            # bare atomic batches' stream (the same records; ours put the last record
            # of each append on the end subject)
            same = bare_topic + "a"
            keep("read bare direct get", await bare_direct(nc, same, records))
            keep("read bare ordered consumer", await bare_ordered(nc, same, records))
            keep("read bare pull fetch", await bare_fetch(nc, same, records))
            keep("short reads ours (direct get)", await ours_short(log, ours_topic, records))
            keep("short reads bare ordered", await bare_short_ordered(nc, same, records))
            keep("short reads bare fetch", await bare_short_fetch(nc, same, records))
        await nc.close()
        await log.close()
    finally:
        stop()
    print(f"nats-server R{replicas}, sync_interval {sync}, {records} records of "
          f"{len(payloads[0])} B, batches of {batch}, best of {rounds}")  # fmt: skip
    for name, rate in best.items():
        print(f"  {name:30s} {rate:10,.0f} records/s")
    reads = [v for k, v in best.items() if k.startswith("read bare")]
    shorts = [v for k, v in best.items() if k.startswith("short reads bare")]
    atomic, pipelined = best["append bare atomic"], best["append bare publish_async"]
    print(f"  append ratio ours/bare atomic: {best['append ours'] / atomic:.2f}")
    print(f"  append ratio ours/bare publish_async: {best['append ours'] / pipelined:.2f}")
    print(f"  scan ratio ours/best bare: {best['read ours (direct get)'] / max(reads):.2f}")
    ours_short_rate = best["short reads ours (direct get)"]
    print(f"  short-read ratio ours/best bare: {ours_short_rate / max(shorts):.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--replicas", type=int, default=1, choices=(1, 3))
    p.add_argument("--sync", default="always", help="the servers' sync_interval (always, 2m)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="nats-bench-") as d:
        asyncio.run(run(a.records, a.batch, a.rounds, a.replicas, a.sync, Path(d)))


if __name__ == "__main__":
    main()
