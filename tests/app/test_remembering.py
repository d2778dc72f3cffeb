"""The idempotency memory: ids per group for a window, written to SQLite, read back."""

from __future__ import annotations

from pathlib import Path

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
