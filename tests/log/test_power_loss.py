"""Power loss: only what was fsynced is sure to be there, checked after a restart.

The seam is ``tidings.log.config.use_disk``; ``powerloss.RecordingDisk`` notes what
each fsync kept and builds what a machine cut off at that instant could have left
(see tests/support/powerloss.py, whose campaign also runs in the reliability suite).
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson
from powerloss import RecordingDisk, campaign

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.core.hub import Hub
from tidings.events.envelope import normalize_event
from tidings.log.config import FsyncPolicy, LogConfig, use_disk

ALWAYS = FsyncPolicy("always")


def ev(eid: str, key: str | None = None) -> dict[str, object]:
    attrs: dict[str, object] = {"type": "order.placed", "id": eid}
    if key is not None:
        attrs["partitionkey"] = key
    return normalize_event(attrs, topic="orders")


async def ids_after_cut(
    tmp_path: Path, publish: list[list[dict[str, object]]], partitions: int = 1,
    config: LogConfig | None = None,
) -> tuple[list[str], list[str]]:
    """Publish under ``always``, cut the power keeping only what was synced, restart:
    (ids acknowledged, ids read back in offset order)."""
    data = tmp_path / "data"
    data.mkdir()
    disk = RecordingDisk(data)
    previous = use_disk(disk)
    acked: list[str] = []
    try:
        hub = Hub(EmbeddedStorage(data, ALWAYS, config))
        await hub.start()
        await hub.create_topic("orders", partitions)
        for events in publish:
            await hub.publish("orders", events)
            acked.extend(str(e["id"]) for e in events)
        disk.cut(tmp_path / "cut", random.Random(0), "synced")
        await hub.close()
    finally:
        use_disk(previous)
    hub = Hub(EmbeddedStorage(tmp_path / "cut", ALWAYS, config))
    await hub.start()
    try:
        found: list[str] = []
        for log in hub.topics["orders"].partitions if "orders" in hub.topics else []:
            found += [orjson.loads(r[2])["id"] for r in log.read(0, 10_000, 1 << 24)]
        return acked, found
    finally:
        await hub.close()


async def test_a_new_topic_survives_a_power_cut(tmp_path: Path) -> None:
    # Its directories (topics/, topics/orders/, topics/orders/0/) are entries in
    # their parents: each must be fsynced there before the first publish answers.
    acked, found = await ids_after_cut(tmp_path, [[ev("a")], [ev("b"), ev("c")]])
    assert found == acked == ["a", "b", "c"]


async def test_a_rolled_segment_survives_a_power_cut(tmp_path: Path) -> None:
    # Small segments: every publish rolls to a new file, made in the partition's directory.
    batches = [[ev(f"e{i}")] for i in range(20)]
    acked, found = await ids_after_cut(tmp_path, batches, config=LogConfig(segment_bytes=600))
    assert found == acked


def test_power_cut_campaign(tmp_path: Path) -> None:
    """Random cuts (seeded) under ``always``, ``interval:5`` and ``interval:20``."""
    summary = campaign(cuts=150, seed=20261205, seconds=60.0, keep=tmp_path)
    assert summary["failures"] == []
    assert summary["runs"] >= 30
    assert summary["acknowledged"] > 0
    for name in ("lost", "duplicated", "out_of_order", "torn", "gaps", "phantom",
                 "dedupe_errors", "group_errors"):
        assert summary[name] == 0, (name, summary)
