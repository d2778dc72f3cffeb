"""The watermark moves with the hub's clock only across quiet gaps.

Event times may lag their append times by any amount (a backfill of old events, a
producer that buffers): while records keep coming no more than ``idle`` apart, the
watermark is the stream time alone. Once the stream pauses, ``advance`` (or the
next record's append time) moves it on by the length of the pause less ``idle``.
"""

from __future__ import annotations

from typing import Any

import pytest
from streamref import T0, ms_of, run, text_of

from tidings.streams import (
    Count,
    Hopping,
    Join,
    Session,
    Sliding,
    StreamJoin,
    Tumbling,
    window_operator,
)

OLD = ms_of("2026-01-01T00:00:00Z")  # about eleven months before T0
HOUR = 3_600_000

WINDOWS = {
    "tumbling": lambda: Tumbling("10s", grace="1s"),
    "hopping": lambda: Hopping("10s", every="5s", grace="1s"),
    "sliding": lambda: Sliding("3s", grace="1s"),
    "session": lambda: Session("2s", grace="1s"),
}


def maker(kind: str) -> Any:
    return lambda: window_operator("v", ["in"], WINDOWS[kind](), lambda e: e.data["k"], Count())


def events(n: int, first_ms: int) -> list[dict[str, Any]]:
    """``n`` events 700 ms apart in event time from ``first_ms``, some out of order
    within the grace, over two keys."""
    out = []
    for i in range(n):
        t = first_ms + 700 * i - (400 if i % 7 == 3 else 0)
        out.append({"type": "t", "time": text_of(t), "data": {"k": "ab"[i % 3 == 0]}})
    return out


def script(evs: list[dict[str, Any]], appended: list[int], end: int) -> list[Any]:
    pairs = enumerate(zip(evs, appended, strict=True))
    return [*(("rec", (0, 0, i, a, ev)) for i, (ev, a) in pairs), ("adv", end)]


def finals(got: Any) -> list[tuple[str, str, Any]]:
    return [(r["data"]["key"], r["data"]["start"], r["data"]["value"]) for r in got.results]


@pytest.mark.parametrize("kind", list(WINDOWS))
def test_a_backfill_of_old_events_appended_back_to_back_is_not_late(kind: str) -> None:
    # 200 events of January published now, 3 ms apart (some in the same ms): none is
    # late, and the windows are those of the same events published when they happened.
    old = events(200, OLD)
    backfill = script(old, [T0 + 3 * (i // 2) for i in range(200)], T0 + HOUR)
    got = run(maker(kind), backfill)
    assert got.late == []
    at_the_time = script(old, [OLD + 700 * i for i in range(200)], OLD + HOUR)
    want = run(maker(kind), at_the_time)
    assert want.late == [] and len(want.results) > 20
    assert finals(got) == finals(want)
    assert got.values == want.values


@pytest.mark.parametrize("kind", list(WINDOWS))
def test_a_steady_producer_lagging_by_an_hour_is_not_late(kind: str) -> None:
    # Each event published an hour after its time (far beyond idle + grace), one every
    # 700 ms: windows close as the stream time passes them, and nothing is late.
    evs = events(100, T0)
    appended = [T0 + HOUR + 700 * i for i in range(100)]
    got = run(maker(kind), script(evs, appended, appended[-1]))
    assert got.late == []
    at_the_time = run(maker(kind), script(evs, [T0 + 700 * i for i in range(100)], T0 + 69_300))
    assert finals(got) == finals(at_the_time)
    assert len(got.results) > 10


def test_a_quiet_stream_closes_its_windows_after_idle_through_advance() -> None:
    # The producer lags an hour; after its last event (time T0 + 5 s, appended an hour
    # later) nothing comes. The window [T0, T0 + 10 s) closes once the hub's clock is
    # idle past the last append and event time, gone on since, reaches its end + grace.
    op = window_operator("q", ["in"], Tumbling("10s", grace="2s", idle="3s"),
                         lambda e: "k", Count())
    op.restore({}, {}, {})
    for i in range(6):
        ev = {"type": "t", "time": text_of(T0 + 1_000 * i)}
        op.process((0, 0, i, T0 + HOUR + 1_000 * i, ev))
    last = T0 + HOUR + 5_000
    # W = stream time + (H - last - idle) reaches T0 + 12 s at H = last + 3 s + 7 s
    op.advance(last + 3_000 + 7_000 - 1)
    assert op.drain().results == []
    op.advance(last + 3_000 + 7_000)
    out = op.drain()
    assert [(r["data"]["value"], r["data"]["final"]) for r in out.results] == [(6, True)]
    assert out.clock["watermark"] == T0 + 12_000
    assert out.clock["last_appended"] == last


def test_after_a_quiet_gap_the_next_record_moves_the_watermark_as_advance_would() -> None:
    # No advance at all: the second record's own append time is the horizon.
    op = window_operator("q", ["in"], Tumbling("10s", grace="2s", idle="3s"),
                         lambda e: "k", Count())
    op.restore({}, {}, {})
    op.process((0, 0, 0, T0 + HOUR, {"type": "t", "time": text_of(T0 + 5_000)}))
    # 20 s of silence: W = T0 + 5 s + 20 s - 3 s = T0 + 22 s closes [T0, T0 + 10 s);
    # the event of T0 + 9 s (inside the closed window) is late, T0 + 21 s is not.
    op.process((0, 0, 1, T0 + HOUR + 20_000, {"type": "t", "time": text_of(T0 + 9_000)}))
    op.process((0, 0, 2, T0 + HOUR + 20_000, {"type": "t", "time": text_of(T0 + 21_000)}))
    out = op.drain()
    assert [r["data"]["value"] for r in out.results] == [1]
    assert [ev["data"]["offset"] for ev in out.late] == [1]
    assert out.late[0]["data"]["watermark"] == text_of(T0 + 22_000)
    assert out.clock["watermark"] == T0 + 22_000


def test_a_stream_join_of_a_backfill_is_not_late() -> None:
    def make() -> StreamJoin:
        return StreamJoin("j", ["l", "r"], Join("1s", grace="1s"), lambda e: e.data["k"],
                          lambda e: e.data["k"], lambda a, b: [a.data["n"], b.data["n"]])

    steps: list[Any] = []
    for i in range(50):
        ev = {"type": "t", "time": text_of(OLD + 1_000 * i), "data": {"k": "x", "n": i}}
        steps.append(("rec", (i % 2, 0, i, T0 + i, ev)))
    steps.append(("adv", T0 + HOUR))
    got = run(make, steps)
    assert got.late == []
    assert [r["data"] for r in got.results] == [[i - 1, i] if i % 2 else [i, i - 1]
                                                 for i in range(1, 50)]


def test_a_clock_from_before_last_appended_restores() -> None:
    # An older checkpoint has no last_appended: it is taken as watermark + idle, no
    # earlier than the last record's append time then.
    window = Tumbling("10s", grace="1s", idle="2s")
    old_clock = {"stream_time": T0 + 4_000, "watermark": T0 + 5_000,
                 "window": window.describe()}
    op = window_operator("q", ["in"], window, lambda e: "k", Count())
    op.restore({}, {f"w:{T0}:k": [3, 0]}, old_clock)
    assert op.drain().clock["last_appended"] == T0 + 7_000
    # W = T0 + 4 s + (H - (T0 + 7 s) - 2 s): T0 + 11 s, the close, at H = T0 + 16 s
    op.advance(T0 + 16_000 - 1)
    assert op.drain().results == []
    op.advance(T0 + 16_000)
    assert [r["data"]["value"] for r in op.drain().results] == [3]
    # a clock that saw no record restores with nothing to go on from
    fresh = window_operator("q", ["in"], window, lambda e: "k", Count())
    fresh.restore({}, {}, {"stream_time": None, "watermark": T0, "window": window.describe()})
    fresh.advance(T0 + HOUR)
    assert fresh.drain().clock == {"stream_time": None, "watermark": T0,
                                   "last_appended": None, "window": window.describe()}
