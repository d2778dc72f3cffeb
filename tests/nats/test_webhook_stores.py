"""The ``WebhookStore`` contract, run by each store: in memory, SQLite (the embedded
log's) and JetStream (a real ``nats-server``): endpoints saved and deleted, attempts
paged newest first and filtered, their retry state, pruning, dead letters marked,
updated and removed. Here beside the NATS tests for their server fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from natsproc import NatsServer

from tidings.backends.embedded.webhooks import SqliteWebhookStore
from tidings.backends.nats import NatsSettings
from tidings.backends.nats.storage import NatsStorage
from tidings.backends.nats.webhooks import NatsWebhookStore
from tidings.core.webhooks.store import (
    Attempt,
    MemoryWebhookStore,
    WebhookDeadLetter,
    WebhookStore,
)

pytestmark = pytest.mark.timeout(60)

NOW = 1_780_000_000_000


@pytest.fixture(params=["memory", "sqlite", "nats"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, nats_server: NatsServer
) -> AsyncIterator[WebhookStore]:
    if request.param == "memory":
        yield MemoryWebhookStore()
        return
    if request.param == "sqlite":
        s = SqliteWebhookStore(tmp_path / "webhooks.sqlite3")
        yield s
        await s.close()
        return
    storage = NatsStorage(NatsSettings(servers=(nats_server.url,)))
    nats = NatsWebhookStore(storage)
    await nats.start()
    # one server for the module: start from empty streams and bucket
    for stream in ("td_webhook_attempts", "td_webhook_dead", "KV_td_webhooks"):
        await storage.log.conn.api(f"STREAM.PURGE.{stream}", {})
    yield nats
    await nats.close()
    await storage.close()


def attempt(endpoint: str, i: int, outcome: str = "success", **kw: Any) -> Attempt:
    fields: dict[str, Any] = {
        "endpoint": endpoint, "time_ms": NOW + i, "msg_id": f"m{i}", "topic": "orders",
        "partition": 0, "offset": i, "attempt": 1, "outcome": outcome,
        "status": 200 if outcome == "success" else 500, "latency_ms": 1.5, "error": None,
        "response": "ok",
    }  # fmt: skip
    fields.update(kw)
    return Attempt(**fields)


def dead(endpoint: str, offset: int) -> WebhookDeadLetter:
    return WebhookDeadLetter(
        endpoint, NOW + offset, "orders", 0, offset, f"m{offset}", b'{"id":"x"}', 5, "500"
    )


async def test_endpoints_are_saved_replaced_and_deleted(store: WebhookStore) -> None:
    await store.save_endpoint({"id": "wh_a", "config": {"url": "u1"}})
    await store.save_endpoint({"id": "wh_b", "config": {"url": "u2"}})
    await store.save_endpoint({"id": "wh_a", "config": {"url": "u3"}})
    rows = sorted(await store.load_endpoints(), key=lambda r: r["id"])
    assert rows == [
        {"id": "wh_a", "config": {"url": "u3"}},
        {"id": "wh_b", "config": {"url": "u2"}},
    ]
    await store.add_attempts([attempt("wh_a", 1)])
    await store.add_dead_letter(dead("wh_a", 1))
    await store.delete_endpoint("wh_a")
    assert [r["id"] for r in await store.load_endpoints()] == ["wh_b"]
    assert await store.attempts("wh_a", None, 10, None) == []
    assert await store.dead_letters("wh_a", 10, None) == []


async def test_attempts_page_newest_first_and_filter(store: WebhookStore) -> None:
    await store.add_attempts(
        [attempt("wh_a", i, "success" if i % 3 else "failed") for i in range(30)]
        + [attempt("wh_b", i) for i in range(5)]
    )
    first = await store.attempts("wh_a", None, 10, None)
    assert [a.offset for a in first] == list(range(29, 19, -1))
    assert first[0] == attempt("wh_a", 29, id=first[0].id)
    after = await store.attempts("wh_a", None, 10, first[-1].id)
    assert [a.offset for a in after] == list(range(19, 9, -1))
    failed = await store.attempts("wh_a", "failed", 100, None)
    assert [a.offset for a in failed] == list(range(27, -1, -3))
    assert [a.offset for a in await store.attempts("wh_a", "success", 2, None)] == [29, 28]
    assert len(await store.attempts("wh_b", None, 100, None)) == 5


async def test_retry_state_names_records_not_done(store: WebhookStore) -> None:
    await store.add_attempts([
        attempt("wh_a", 0, "failed", offset=7, attempt=1, time_ms=NOW),
        attempt("wh_a", 1, "failed", offset=7, attempt=2, time_ms=NOW + 10),
        attempt("wh_a", 2, "failed", offset=8, attempt=1, time_ms=NOW + 20),
        attempt("wh_a", 3, "success", offset=8, attempt=2, time_ms=NOW + 30),
        attempt("wh_a", 4, "failed", offset=9, attempt=1, time_ms=NOW - 5_000),  # too old
        attempt("wh_a", 5, "failed", offset=10, trigger="test", time_ms=NOW + 40),
    ])  # fmt: skip
    state = await store.retry_state("wh_a", NOW - 1_000)
    assert state == {("orders", 0, 7): (2, NOW + 10)}


async def test_pruning_keeps_the_newest_per_endpoint(store: WebhookStore) -> None:
    await store.save_endpoint({"id": "wh_a"})
    await store.save_endpoint({"id": "wh_b"})
    await store.add_attempts([attempt("wh_a", i) for i in range(10)])
    await store.add_attempts([attempt("wh_b", i) for i in range(3)])
    assert await store.prune_attempts(NOW - 1, keep=4) == 6
    assert [a.offset for a in await store.attempts("wh_a", None, 100, None)] == [9, 8, 7, 6]
    assert len(await store.attempts("wh_b", None, 100, None)) == 3


async def test_dead_letters_are_marked_updated_and_removed(store: WebhookStore) -> None:
    ids = [await store.add_dead_letter(dead("wh_a", i)) for i in range(4)]
    assert len(set(ids)) == 4
    listed = await store.dead_letters("wh_a", 10, None)
    assert [d.offset for d in listed] == [3, 2, 1, 0]  # newest first by id
    assert listed[0].payload == b'{"id":"x"}' and listed[0].id == ids[3]
    assert [d.offset for d in await store.dead_letters("wh_a", 2, listed[1].id)] == [1, 0]
    assert await store.mark_replaying("wh_a", [ids[1], ids[2]]) == 2
    assert await store.mark_replaying("wh_a", [ids[1]]) == 0  # already marked
    marked = await store.dead_letters("wh_a", 10, None, replaying=True)
    assert sorted(d.offset for d in marked) == [1, 2]
    await store.remove_dead_letter(ids[1])
    (second,) = [d for d in marked if d.id == ids[2]]
    await store.update_dead_letter(replace(second, attempts=9, replaying=False, reason="again"))
    rows = {d.offset: d for d in await store.dead_letters("wh_a", 10, None)}
    assert sorted(rows) == [0, 2, 3]
    assert rows[2].attempts == 9 and rows[2].reason == "again" and not rows[2].replaying
    assert await store.mark_replaying("wh_a", None) == 3
