"""A view's follower applies another node's commits whole: a read of the view (which
takes no lock) never sees part of a commit, however the reads of the changelog cut it."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tidings.core import viewfollow
from tidings.core.viewfollow import catch_up
from tidings.core.viewstate import View
from tidings.log.memory import MemoryPartition


async def test_a_follower_never_shows_half_a_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(viewfollow, "_BATCH", 2)  # stands for 1000 records or 1 MiB
    part = MemoryPartition()
    # one commit of another node: two keys and its checkpoint, appended at once
    commit = [
        {"partitionkey": "v:a", "data": {"value": 1}},
        {"partitionkey": "v:b", "data": {"value": 1}},
        {"partitionkey": "c", "data": {"inputs": {"in": {"0": 2}}}},
    ]
    await part.append([orjson.dumps({"partitionkey": "c", "data": {}})])  # an earlier one
    await part.append([orjson.dumps(e) for e in commit])
    view = View("v", "table", ["in"], None, None, None)
    seen: list[tuple[bool, bool]] = []

    async def reader() -> None:
        while view.applied[0] < 4:
            seen.append(("a" in view.values, "b" in view.values))
            await asyncio.sleep(0)

    r = asyncio.ensure_future(reader())
    assert await catch_up(view, 0, part, part.end_offset)
    await r
    assert (True, False) not in seen, f"a read saw half a commit: {seen}"
    assert view.applied == [4] and set(view.values) == {"a", "b"}
    assert view.checkpoints[0] == {"inputs": {"in": {"0": 2}}}
