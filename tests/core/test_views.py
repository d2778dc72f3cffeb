"""Views in the core, over the in-memory storage: declare, commit (compare and set),
rebuild, lookups, scans, waits and the change feed (streams design, sections 3 and 4)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from viewhelp import DELETE, commit_events

from tidings.core.groups import GroupConfig
from tidings.core.hub import Hub, HubOptions
from tidings.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidEvent,
    StorageUnavailable,
    TopicNotFound,
    ViewNotFound,
)
from tidings.events.envelope import normalize_event
from tidings.log.memory import MemoryStorage

STOCK = {"kind": "view", "inputs": ["inventory"], "app": "shop"}
MINUTE = {"kind": "tumbling", "size": 60_000, "grace": 0, "idle": 0}


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    h = Hub(MemoryStorage())
    await h.start()
    yield h
    await h.close()


async def commit(
    hub: Hub,
    name: str,
    values: dict[str, Any],
    upto: int,
    *,
    expect: int | None = None,
    generation: int | None = None,
    seq: int = 0,
) -> dict[str, int]:
    view = hub.views.view(name)
    gen = view.generation if generation is None else generation
    at = hub.topics[view.topic].partitions[0].end_offset if expect is None else expect
    events = commit_events(name, gen, seq, values, {"inventory": {"0": upto}})
    return await hub.views.commit(name, gen, at, events)


async def test_a_declared_view_has_a_changelog_of_one_partition(hub: Hub) -> None:
    info, created = await hub.views.put("stock", STOCK)
    assert created and info["generation"] == 0 and info["keys"] == 0
    assert len(hub.topics["__view.stock"].partitions) == 1
    again, created = await hub.views.put("stock", {**STOCK, "app": "shop2"})
    assert not created and again["app"] == "shop2"
    with pytest.raises(Conflict) as refused:
        await hub.views.put("stock", {**STOCK, "inputs": ["other"]})
    assert refused.value.fields["field"] == "inputs"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"kind": "table", "inputs": ["a"]}, "kind"),
        ({"kind": "view", "inputs": []}, "inputs"),
        ({"kind": "view", "inputs": ["__view.a"]}, "inputs[0]"),
        ({"kind": "view", "inputs": ["a"], "colour": 1}, "colour"),
        ({"kind": "window", "inputs": ["a"]}, "window"),
        ({"kind": "window", "inputs": ["a"], "window": {"nonsense": True}}, "window.kind"),
        ({"kind": "window", "inputs": ["a"], "window": {**MINUTE, "gap": 1}}, "window.gap"),
        ({"kind": "window", "inputs": ["a"], "window": {**MINUTE, "size": 0}}, "window.size"),
        ({"kind": "window", "inputs": ["a"], "window": {**MINUTE, "size": "1m"}}, "window.size"),
        ({"kind": "window", "inputs": ["a"], "window": {**MINUTE, "grace": -1}}, "window.grace"),
        ({"kind": "window", "inputs": ["a"], "window": {"kind": "session", "gap": 5}},
         "window.grace"),
        ({"kind": "window", "inputs": ["a"],
          "window": {"kind": "hopping", "size": 5, "every": 6, "grace": 0, "idle": 0}},
         "window.every"),
        ({"kind": "window", "inputs": ["v"], "window": MINUTE}, "inputs"),
        ({"kind": "window", "inputs": ["v.late"], "window": MINUTE}, "inputs"),
        ({"kind": "view", "inputs": ["a"], "emit": "final"}, "emit"),
    ],
)
async def test_a_bad_declaration_names_its_field(
    hub: Hub, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        await hub.views.put("v", spec)
    assert refused.value.fields["field"] == field
    assert sorted(hub.topics) == []  # nothing made: no changelog, input or result topic


def test_every_window_the_streams_operators_describe_is_declarable() -> None:
    from tidings.core.viewrecords import check_window
    from tidings.streams import Hopping, Session, Sliding, Tumbling
    from tidings.streams.joins import Join

    for window in (
        Tumbling("1m"), Tumbling("1m", grace="10s", idle="1s"), Hopping("5m", every="1m"),
        Sliding("30s", grace="2s"), Session("10s"), Join(within="2s", idle="300ms"),
        Join(within=0),
    ):  # fmt: skip
        check_window(window.describe())


async def test_a_window_view_name_too_long_for_its_late_topic_makes_nothing(hub: Hub) -> None:
    name = "w" * 198  # a valid name, but "{name}.late" is 203 characters
    with pytest.raises(BadRequest) as refused:
        await hub.views.put(name, {"kind": "window", "inputs": ["orders"], "window": MINUTE})
    assert refused.value.fields["field"] == "view" and ".late" in str(refused.value)
    assert sorted(hub.topics) == []


async def test_a_window_view_never_takes_over_a_topic_with_other_events(hub: Hub) -> None:
    await hub.publish("payments", [{"type": "paid", "source": "t", "id": "1"}])
    spec = {"kind": "window", "inputs": ["orders"], "window": MINUTE}
    with pytest.raises(Conflict) as refused:
        await hub.views.put("payments", spec)
    assert refused.value.fields["field"] == "view" and "payments" in str(refused.value)
    assert "orders" not in hub.topics and "payments.late" not in hub.topics
    await hub.views.put("spm", spec)  # window view spm writes spm.late ...
    with pytest.raises(Conflict, match="result topic of window view 'spm'"):
        await hub.views.put("spm.late", spec)  # ... which is this one's result topic
    await hub.create_topic("empty")  # made ahead (as under auto-create off): taken
    _, created = await hub.views.put("empty", spec)
    assert created


async def test_a_window_view_makes_result_topics_only_under_auto_create() -> None:
    strict = Hub(MemoryStorage(), HubOptions(auto_create=False))
    await strict.start()
    try:
        await strict.create_topic("orders")
        spec = {"kind": "window", "inputs": ["orders"], "window": MINUTE}
        with pytest.raises(TopicNotFound) as refused:
            await strict.views.put("spm", spec)
        assert refused.value.fields["topic"] == "spm"
        assert sorted(strict.topics) == ["orders"]
        await strict.create_topic("spm")
        await strict.create_topic("spm.late")
        _, created = await strict.views.put("spm", spec)
        assert created
    finally:
        await strict.close()


async def test_a_redeclared_view_makes_its_deleted_input_again(hub: Hub) -> None:
    await hub.views.put("stock", STOCK)
    await hub.delete_topic("inventory")
    info, created = await hub.views.put("stock", STOCK)
    assert not created and "inventory" in hub.topics and info["lag"] == {"inventory": 0}


async def test_a_missing_input_is_made_as_a_group_s_topic_is() -> None:
    hub = Hub(MemoryStorage())
    await hub.start()
    await hub.views.put("stock", STOCK)
    assert "inventory" in hub.topics
    await hub.close()
    strict = Hub(MemoryStorage(), HubOptions(auto_create=False))
    await strict.start()
    with pytest.raises(TopicNotFound):
        await strict.views.put("stock", STOCK)
    assert "__view.stock" not in strict.topics
    await strict.close()


async def test_a_window_view_gets_its_result_topics(hub: Hub) -> None:
    await hub.views.put("spm", {"kind": "window", "inputs": ["orders"], "window": MINUTE})
    assert {"spm", "spm.late"} <= set(hub.topics)
    assert hub.views.info("spm")["emit"] == "final"


async def test_commits_are_compared_and_set_on_the_changelog_end(hub: Hub) -> None:
    await hub.views.put("stock", STOCK)
    first = await commit(hub, "stock", {"a": 1, "b": 2}, 3, expect=0)
    assert first == {"offset": 0, "next": 3}
    assert hub.views.get("stock", "a") == (1, 0, 0)
    with pytest.raises(Conflict) as lost:
        await commit(hub, "stock", {"a": 5}, 4, expect=0)  # a writer that did not see it
    assert lost.value.fields["next_offset"] == 3 and lost.value.fields["field"] == "expect"
    with pytest.raises(Conflict) as ahead:  # past the end: the store refuses it
        await commit(hub, "stock", {"a": 6}, 4, expect=7)
    assert ahead.value.fields["next_offset"] == 3 and ahead.value.fields["field"] == "expect"
    assert hub.views.get("stock", "a") == (1, 0, 0)
    assert hub.topics["__view.stock"].partitions[0].end_offset == 3
    await commit(hub, "stock", {"a": DELETE, "c": {"n": 3}}, 5, expect=3)
    with pytest.raises(ViewNotFound):
        hub.views.get("stock", "a")
    assert hub.views.get("stock", "c") == ({"n": 3}, 0, 4)
    info = hub.views.info("stock")
    assert info["keys"] == 2 and info["positions"] == {"inventory": "0:5"}
    assert info["checkpoint"]["position"] == "0:5"


async def test_of_two_concurrent_commits_at_one_offset_one_wins(hub: Hub) -> None:
    await hub.views.put("stock", STOCK)
    results = await asyncio.gather(
        commit(hub, "stock", {"k": "first"}, 1, expect=0),
        commit(hub, "stock", {"k": "second"}, 1, expect=0),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "dict"]
    winner = "first" if isinstance(results[0], dict) else "second"
    assert hub.views.get("stock", "k")[0] == winner


async def test_a_rebuild_empties_the_view_and_refuses_the_old_generation(hub: Hub) -> None:
    await hub.views.put("stock", STOCK)
    await commit(hub, "stock", {"a": 1}, 1)
    info = await hub.views.rebuild("stock")
    assert info["generation"] == 1 and info["keys"] == 0
    assert info["changelog"]["next_offset"] == 0
    with pytest.raises(Conflict) as stale:
        await commit(hub, "stock", {"a": 2}, 1, expect=0, generation=0)
    assert stale.value.fields["generation"] == 1
    await commit(hub, "stock", {"a": 3}, 1, expect=0, generation=1)
    assert hub.views.get("stock", "a") == (3, 0, 0)


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (lambda evs: evs[:-1], "events"),  # no checkpoint
        (lambda evs: [evs[-1], *evs], "events[2].partitionkey"),  # two
        (lambda evs: [{**evs[0], "partitionkey": "x:a"}, evs[-1]], "events[0].partitionkey"),
        (lambda evs: [{**evs[0], "data": 5}, evs[-1]], "events[0].data"),
        (lambda evs: [{**evs[0], "type": "other"}, evs[-1]], "events[0].type"),
        (lambda evs: [evs[0], {**evs[-1], "data": {**evs[-1]["data"], "generation": 9}}], "events"),
        (
            lambda evs: [evs[0], {**evs[-1], "data": {**evs[-1]["data"], "inputs": {"t": 1}}}],
            "events[1].data.inputs",
        ),
        (lambda evs: [], "events"),
    ],
)
async def test_a_bad_commit_names_what_is_wrong_and_writes_nothing(
    hub: Hub, mangle: Any, field: str
) -> None:
    await hub.views.put("stock", STOCK)
    events = commit_events("stock", 0, 0, {"a": 1}, {"inventory": {"0": 1}})
    with pytest.raises(BadRequest) as refused:
        await hub.views.commit("stock", 0, 0, mangle(events))
    assert refused.value.fields["field"] == field
    assert hub.topics["__view.stock"].partitions[0].end_offset == 0


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ({"inventory": {"1" * 5000: 1}}, "without leading zeros"),
        ({"inventory": {"00": 1}}, "without leading zeros"),
        ({"inventory": {"1": 1}}, "partition 1 of 'inventory', which has 1 partition(s)"),
        ({"inventory": {"0": 1}, "sales": {"0": 1}}, "'sales', which task 0 of view"),
    ],
)
async def test_a_checkpoint_names_only_the_view_s_inputs_and_their_partitions(
    hub: Hub, inputs: dict[str, dict[str, int]], words: str
) -> None:
    await hub.views.put("stock", STOCK)
    await hub.views.put("sales", {**STOCK, "inputs": ["sales"]})  # a topic, not stock's input
    events = commit_events("stock", 0, 0, {"a": 1}, inputs)
    with pytest.raises(BadRequest) as refused:
        await hub.views.commit("stock", 0, 0, events)
    assert refused.value.fields["field"] == "events[1].data.inputs"
    assert words in refused.value.detail
    assert hub.topics["__view.stock"].partitions[0].end_offset == 0
    assert hub.views.info("stock")["keys"] == 0 and len(hub.views.list()) == 2


async def test_a_null_value_is_a_deletion_compaction_removes_too(hub: Hub) -> None:
    await hub.views.put("stock", STOCK)
    await commit(hub, "stock", {"a": 1}, 1)
    events = commit_events("stock", 0, 1, {"a": DELETE}, {"inventory": {"0": 1}})
    events[0]["data"] = None
    await commit_raw(hub, events)
    part = hub.topics["__view.stock"].partitions[0]
    [(_, _, payload)] = await part.read(2, 1)
    assert "data" not in orjson.loads(payload)  # a tombstone, as compaction sees one
    with pytest.raises(ViewNotFound):
        hub.views.get("stock", "a")
    events = commit_events("stock", 0, 2, {"b": DELETE}, {"inventory": {"0": 1}})
    events[0]["data_base64"] = "AA=="
    with pytest.raises(BadRequest) as refused:
        await commit_raw(hub, events)
    assert refused.value.fields["field"] == "events[0].data_base64"


async def commit_raw(hub: Hub, events: list[dict[str, Any]]) -> None:
    at = hub.topics["__view.stock"].partitions[0].end_offset
    await hub.views.commit("stock", 0, at, events)


async def test_the_checkpoint_is_written_last_wherever_it_is_given(hub: Hub) -> None:
    await hub.views.put("stock", STOCK)
    events = commit_events("stock", 0, 0, {"a": 1, "b": 2}, {"inventory": {"0": 1}})
    await hub.views.commit("stock", 0, 0, [events[-1], *events[:-1]])
    assert hub.views.get("stock", "a") == (1, 0, 0)
    assert hub.views.info("stock")["checkpoint"]["position"] == "0:2"


async def test_a_commit_of_an_invalid_cloudevent_is_refused(hub: Hub) -> None:
    await hub.views.put("stock", STOCK)
    events = commit_events("stock", 0, 0, {"a": 1}, {"inventory": {"0": 1}})
    events[0]["time"] = "yesterday"
    with pytest.raises(InvalidEvent) as refused:
        await hub.views.commit("stock", 0, 0, events)
    assert refused.value.fields["index"] == 0


async def test_keys_scan_in_order_a_page_at_a_time(hub: Hub) -> None:
    await hub.views.put("stock", STOCK)
    await commit(hub, "stock", {f"sku-{i}@x": i for i in range(7)} | {"other": 0}, 8)
    page, nxt = hub.views.scan("stock", prefix="sku-", limit=3)
    assert [k for k, _, _, _ in page] == ["sku-0@x", "sku-1@x", "sku-2@x"] and nxt == "sku-2@x"
    seen = [k for k, _, _, _ in page]
    while nxt is not None:
        page, nxt = hub.views.scan("stock", prefix="sku-", after=nxt, limit=3)
        seen += [k for k, _, _, _ in page]
    assert seen == [f"sku-{i}@x" for i in range(7)]
    assert hub.views.scan("stock", limit=100)[1] is None
    with pytest.raises(BadRequest):
        hub.views.scan("stock", limit=0)


async def test_wait_for_returns_once_a_commit_covers_the_position(hub: Hub) -> None:
    await hub.views.put("stock", STOCK)
    waiting = asyncio.create_task(hub.views.wait_for("stock", "inventory", {0: 4}, 10))
    await commit(hub, "stock", {"a": 1}, 4)  # offsets 0..3: not 4 yet
    await asyncio.sleep(0)
    assert not waiting.done()
    await commit(hub, "stock", {"a": 2}, 5)
    assert await waiting
    assert not await hub.views.wait_for("stock", "inventory", {0: 5}, 0.01)
    with pytest.raises(BadRequest):
        hub.views.input_of("stock", "orders")


async def test_the_change_feed_follows_a_snapshot_and_resets_after_a_rebuild(hub: Hub) -> None:
    await hub.views.put("stock", STOCK)
    await commit(hub, "stock", {"a": 1}, 1)
    generation, offset, entries = hub.views.snapshot("stock")
    assert (generation, offset, entries) == (0, {0: 2}, [("a", 1, 0, 0)])
    later = asyncio.create_task(hub.views.changes("stock", generation, offset, wait_s=10))
    await commit(hub, "stock", {"b": 2, "a": DELETE}, 2)
    feed = await later
    assert [c.to_dict() for c in feed.changes] == [
        {"key": "b", "value": 2, "position": "0:2"},
        {"key": "a", "deleted": True, "position": "0:3"},
    ]
    assert feed.next == {0: 5} and not feed.reset
    await hub.views.rebuild("stock")
    assert (await hub.views.changes("stock", generation, feed.next)).reset


async def test_clients_cannot_publish_to_a_changelog_nor_consume_it_in_a_group(hub: Hub) -> None:
    await hub.views.put("stock", STOCK)
    event = normalize_event({"type": "x"}, topic="__view.stock")
    with pytest.raises(Forbidden, match="changelog of view 'stock'"):
        await hub.publish("__view.stock", [event])
    with pytest.raises(Forbidden):
        await hub.put_group("__view.stock", "g", GroupConfig())
    assert hub.topics["__view.stock"].partitions[0].end_offset == 0


async def test_a_changelog_that_cannot_be_read_at_start_is_503_never_replaced() -> None:
    storage = MemoryStorage()
    first = Hub(storage)
    await first.start()
    await first.views.put("stock", STOCK)
    await commit(first, "stock", {"a": 1}, 1)
    await first.topics["__view.stock"].partitions[0].append([b"not json"])
    again = Hub(storage)  # the same storage, as a restart over the same disk
    await again.start()
    await again.views.ready()
    with pytest.raises(StorageUnavailable, match="could not be read"):
        again.views.get("stock", "a")
    with pytest.raises(StorageUnavailable):
        await again.views.put("stock", STOCK)
    [listed] = again.views.list()
    assert listed["name"] == "stock" and "JSONDecodeError" in listed["failed"]
    assert again.topics["__view.stock"].partitions[0].end_offset == 3  # still there


async def test_a_changelog_is_compacted_by_key_and_reloads_the_same(tmp_path: Path) -> None:
    """On disk a changelog keeps the latest record per key: many commits of a few keys
    shrink to about one record each, and a restarted hub serves the same values."""
    from tidings.backends.embedded.storage import EmbeddedStorage
    from tidings.log.config import LogConfig

    def open_hub() -> Hub:
        return Hub(EmbeddedStorage(tmp_path, log_config=LogConfig(segment_bytes=4096)))

    hub = open_hub()
    await hub.start()
    await hub.views.put("stock", STOCK)
    assert hub.topics["__view.stock"].retention.compaction == "key"
    for seq in range(300):
        await commit(hub, "stock", {f"sku-{seq % 3}": seq}, upto=0, seq=seq)
    part = hub.topics["__view.stock"].partitions[0]
    end = part.end_offset
    assert end == 600  # a value and a checkpoint per commit
    await hub.storage.compact(hub.clock.time_ms())
    kept = len(await _all_records(part))
    assert kept < 60, kept  # the active segment and the latest per key of the sealed ones
    assert part.end_offset == end
    before = {k: hub.views.get("stock", k)[0] for k in ("sku-0", "sku-1", "sku-2")}
    assert before == {"sku-0": 297, "sku-1": 298, "sku-2": 299}
    await hub.close()

    hub = open_hub()
    await hub.start()
    try:
        await hub.views.ready()
        assert hub.topics["__view.stock"].retention.compaction == "key"
        after = {k: hub.views.get("stock", k)[0] for k in ("sku-0", "sku-1", "sku-2")}
        assert after == before
        assert hub.views.info("stock")["positions"] == {"inventory": "0:0"}
    finally:
        await hub.close()


async def _all_records(part: Any) -> list[tuple[int, int, bytes]]:
    out: list[tuple[int, int, bytes]] = []
    offset = part.start_offset
    while offset < part.end_offset:
        got = await part.read(offset, 1000)
        if not got:
            break
        out += got
        offset = got[-1][0] + 1
    return out


async def test_a_commit_whose_caller_is_cancelled_is_served_once_it_lands(
    tmp_path: Path,
) -> None:
    """The append cannot be taken back once started, so a caller cancelled meanwhile (an
    App stopped mid-commit) must not leave the changelog ahead of what is served."""
    from tidings.backends.embedded.storage import EmbeddedStorage
    from tidings.log.config import FsyncPolicy

    hub = Hub(EmbeddedStorage(tmp_path, FsyncPolicy("always")))
    await hub.start()
    try:
        await hub.views.put("stock", STOCK)
        view = hub.views.view("stock")
        part = hub.topics[view.topic].partitions[0]
        for seq in range(12):  # cancelled after 0, 1, ... loop turns: one lands mid-append
            at = part.end_offset
            events = commit_events("stock", 0, seq, {f"k{seq}": seq}, {"inventory": {"0": 0}})
            task = asyncio.create_task(hub.views.commit("stock", 0, at, events))
            for _ in range(seq):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # The next commit sees every record the changelog holds (told by a 409 where
            # the cancelled append was not readable yet, as a processor is).
            try:
                await commit(hub, "stock", {"after": seq}, 0, seq=100 + seq)
            except Conflict as lost:
                at = lost.fields["next_offset"]
                await commit(hub, "stock", {"after": seq}, 0, seq=100 + seq, expect=at)
            landed = {
                ev["partitionkey"][2:]
                for _, _, payload in await _all_records(part)
                if (ev := orjson.loads(payload))["partitionkey"].startswith("v:")
            }
            assert set(view.keys) == landed, seq
            assert view.applied == [part.end_offset]
        assert any(f"k{seq}" in view.keys for seq in range(12))  # some landed
    finally:
        await hub.close()


async def test_reads_refuse_until_the_changelogs_are_read(tmp_path: Path) -> None:
    """A read while a changelog is read at start could serve part of a commit: 503 until
    then, and waiting reads wait for it."""
    from tidings.backends.embedded.storage import EmbeddedStorage

    hub = Hub(EmbeddedStorage(tmp_path))
    await hub.start()
    await hub.views.put("stock", STOCK)
    await commit(hub, "stock", {f"k{i:05d}": i for i in range(5000)}, 1)
    await hub.close()

    hub = Hub(EmbeddedStorage(tmp_path))
    await hub.start()
    try:
        assert not hub.views.loaded.is_set()
        for read in (
            lambda: hub.views.get("stock", "k00001"),
            lambda: hub.views.scan("stock", "", None, 10),
            lambda: hub.views.snapshot("stock"),
            lambda: hub.views.info("stock"),
            lambda: hub.views.reflects("stock", "inventory", {0: 0}),
            hub.views.list,
        ):
            with pytest.raises(StorageUnavailable, match="still reading"):
                read()
        assert await hub.views.wait_for("stock", "inventory", {0: 0}, 10)
        assert hub.views.loaded.is_set()
        assert hub.views.info("stock")["keys"] == 5000
    finally:
        await hub.close()


async def test_copies_stored_without_their_checkpoint_are_not_routed_twice() -> None:
    """A routing commit whose copies were stored but whose checkpoint was not (the hub
    stopped between the two) is redone after a restart, past the dedupe window: the
    hub finds the copies past the task's last checkpoint and stores none twice."""
    storage = MemoryStorage()
    options = HubOptions(dedupe_window_ms=1)  # the window cannot catch the repeats
    first = Hub(storage, options)
    await first.start()
    info, _ = await first.views.put("sku", {"kind": "view", "inputs": ["orders"],
                                            "repartition": 2})
    assert info["repartition"]["routers"] == [["orders", 0]]  # task 2 routes it

    def copy(offset: int, sku: str) -> dict[str, Any]:
        return {"specversion": "1.0", "id": f"sku.0.orders.0.{offset}", "source": "t",
                "type": "order", "partitionkey": sku, "routedid": f"o{offset}",
                "data": {"sku": sku}}

    def checkpoint(seq: int, upto: int) -> list[dict[str, Any]]:
        return [{"specversion": "1.0", "id": f"c{seq}", "source": "t", "partitionkey": "c",
                 "type": "tidings.view.checkpoint",
                 "data": {"generation": 0, "seq": seq, "inputs": {"orders": {"0": upto}}}}]

    await first.views.commit("sku", 0, 0, checkpoint(0, 1), 2, [copy(0, "a")])
    # The next commit's copies are stored, and the hub stops before its checkpoint.
    await first.publish("__view.sku.by-key", [
        normalize_event(copy(o, sku), topic="__view.sku.by-key") for o, sku in ((1, "b"), (2, "a"))
    ], own=True)
    again = Hub(storage, options)  # the same storage, as a restart over the same disk
    await again.start()
    await again.views.ready()
    await asyncio.sleep(0.01)  # past the dedupe window
    # The task redoes it from its checkpoint, in two commits this time.
    await again.views.commit("sku", 0, 1, checkpoint(1, 2), 2, [copy(1, "b")])
    await again.views.commit("sku", 0, 2, checkpoint(2, 4), 2, [copy(2, "a"), copy(3, "b")])
    stored = []
    for part in again.topics["__view.sku.by-key"].partitions:
        stored += [orjson.loads(payload)["id"] for _, _, payload in await part.read(0, 100)]
    assert sorted(stored) == [f"sku.0.orders.0.{o}" for o in range(4)]  # each once
    last = again.views.view("sku").checkpoints[2]
    ends = [p.end_offset for p in again.topics["__view.sku.by-key"].partitions]
    assert {int(q): o for q, o in last["routed"].items()} == {
        q: end for q, end in enumerate(ends) if end
    }  # min_position waits for every copy, the ones found again too


async def test_a_rebuild_lays_a_repartitioned_view_out_as_declared(hub: Hub) -> None:
    """Declared with repartition true (as many partitions as the input with the
    most), a view whose input has grown is refused as declared again (409: a new
    layout), and a rebuild without arguments lays it out as declared, counted anew,
    so the same declaration is then taken."""
    spec = {"kind": "view", "inputs": ["orders"], "repartition": True}
    await hub.create_topic("orders", partitions=2)
    info, _ = await hub.views.put("sku", spec)
    assert (info["tasks"], info["repartition"]["partitions"]) == (4, 2)
    await hub.create_topic("orders", partitions=4)
    with pytest.raises(Conflict):
        await hub.views.put("sku", spec)
    rebuilt = await hub.views.rebuild("sku")
    assert (rebuilt["tasks"], rebuilt["repartition"]["partitions"]) == (8, 4)
    again, created = await hub.views.put("sku", spec)
    assert not created and again["generation"] == rebuilt["generation"]
    assert hub.views.views["sku"].declaration()["repartition_asked"] is True
