"""The idempotency memory: ids per group for a window, written to SQLite, read back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tidings.app.remembering import HandledIds
from tidings.testing import VirtualClock


def test_ids_survive_a_reopen_within_the_window_and_not_past_it(tmp_path: Path) -> None:
    clock = VirtualClock()
    path = tmp_path / "apps" / "svc.handled.sqlite3"
    memory = HandledIds(60_000, clock, path)
    now = clock.time_ms()
    for group, eid in (("billing", "e1"), ("billing", "e2"), ("audit", "e1")):
        memory.add(group, memory.group(group), eid, now)
    assert memory.dirty
    memory.flush()
    assert not memory.dirty
    memory.close()

    clock.advance(30)
    again = HandledIds(60_000, clock, path)
    billing, audit = again.group("billing"), again.group("audit")
    assert again.seen(billing, "e1", clock.time_ms()) and again.seen(billing, "e2", clock.time_ms())
    assert again.seen(audit, "e1", clock.time_ms()) and not again.seen(audit, "e2", clock.time_ms())
    again.close()

    clock.advance(31)  # past the window: forgotten, and deleted from the file
    late = HandledIds(60_000, clock, path)
    assert not late.seen(late.group("billing"), "e1", clock.time_ms())
    late.close()


def test_ids_out_of_the_window_leave_memory_at_a_flush() -> None:
    clock = VirtualClock()
    memory = HandledIds(1_000, clock)
    ids = memory.group("g")
    memory.add("g", ids, "old", clock.time_ms())
    clock.advance(0.5)
    memory.add("g", ids, "new", clock.time_ms())
    clock.advance(0.6)
    memory.flush()
    assert list(ids) == ["new"]
    assert not memory.dirty  # nothing to write without a file


def test_a_zero_window_remembers_nothing(tmp_path: Path) -> None:
    memory = HandledIds(0, VirtualClock(), tmp_path / "x.sqlite3")
    assert not memory.enabled
    assert not (tmp_path / "x.sqlite3").exists()


def test_ids_taken_in_one_thread_are_written_from_another_and_read_back(tmp_path: Path) -> None:
    import threading

    clock = VirtualClock()
    path = tmp_path / "apps" / "svc.handled.sqlite3"
    memory = HandledIds(60_000, clock, path)
    memory.add("billing", memory.group("billing"), "e1", clock.time_ms())
    taken = memory.take()
    assert taken is not None and not memory.dirty
    memory.add("billing", memory.group("billing"), "e2", clock.time_ms())  # meanwhile
    writer = threading.Thread(target=memory.write, args=(taken,))
    writer.start()
    writer.join()
    memory.close()  # writes e2
    again = HandledIds(60_000, clock, path)
    billing = again.group("billing")
    assert again.seen(billing, "e1", clock.time_ms()) and again.seen(billing, "e2", clock.time_ms())
    again.close()


def test_a_failed_write_leaves_the_ids_pending_for_the_next(tmp_path: Path) -> None:
    clock = VirtualClock()
    path = tmp_path / "svc.handled.sqlite3"
    memory = HandledIds(60_000, clock, path)
    memory.add("g", memory.group("g"), "e1", clock.time_ms())
    taken = memory.take()
    assert taken is not None
    blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the file
    memory._db.execute("PRAGMA busy_timeout=0")  # type: ignore[union-attr]
    with pytest.raises(sqlite3.OperationalError):
        memory.write(taken)
    assert memory.dirty  # e1 is pending again
    blocker.execute("ROLLBACK")
    blocker.close()
    memory.close()
    again = HandledIds(60_000, clock, path)
    assert again.seen(again.group("g"), "e1", clock.time_ms())
    again.close()
