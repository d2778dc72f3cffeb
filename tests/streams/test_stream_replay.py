"""Live equals replay: the merger and an operator fed by reads of a simulated hub.

Live, the hub's clock moves on while records are appended to two inputs of two
partitions each; every read takes a random number of the records that exist and
answers a horizon as the hub does (its clock if the read reached the end, else the
append time of the next unread record). The replay reads everything at once, after
the fact, in reads of another size. Both must give the same results, late events
and served values.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from streamref import T0, Run, text_of

from tidings.streams import Count, Merger, Session, Sliding, Sum, Tumbling, window_operator

Rec = tuple[int, int, int, int, dict[str, Any]]


def appended_records(seed: int, n: int, behind: int = 0) -> dict[tuple[int, int], list[Rec]]:
    """``n`` records over two inputs of two partitions, event times ``behind`` ms (and
    some more) before their append times."""
    rnd = random.Random(seed)
    parts: dict[tuple[int, int], list[Rec]] = {(i, p): [] for i in (0, 1) for p in (0, 1)}
    clock = T0
    for _ in range(n):
        clock += rnd.choice((0, rnd.randint(1, 700)))
        src = rnd.choice(list(parts))
        lag = behind + rnd.choice((0, 5, rnd.randint(0, 4_000), rnd.randint(0, 30_000)))
        ev = {"type": "t", "time": text_of(clock - lag),
              "data": {"k": rnd.choice("xyz"), "v": rnd.randint(1, 9)}}
        recs = parts[src]
        recs.append((src[0], src[1], len(recs), clock, ev))
    return parts


def feed(
    op: Any, parts: dict[tuple[int, int], list[Rec]], reads: list[tuple[int, int, int]]
) -> Run:
    """``reads``: (now, input, limit): read input at hub time ``now``, up to limit records."""
    got = Run()
    op.restore({}, {}, {})
    merger = Merger(2)
    pos = dict.fromkeys(parts, 0)
    for now, i, limit in reads:
        records: list[Rec] = []
        horizon = now
        for p in (0, 1):
            recs = parts[(i, p)]
            existing = [r for r in recs[pos[(i, p)]:] if r[3] <= now]
            taken = existing[:limit]
            pos[(i, p)] += len(taken)
            records += taken
            if len(taken) < len(existing):  # stopped early: the next unread record's time
                horizon = min(horizon, existing[len(taken)][3])
        merger.add(i, records, horizon)
        op.process_all(merger.ready())
        if merger.horizon is not None:
            op.advance(merger.horizon)
        got.take(op.drain())
    assert not merger.holding()
    return got


WINDOWS = {
    "tumbling": lambda: Tumbling("10s", grace="2s"),
    "sliding": lambda: Sliding("3s", grace="1s"),
    "session": lambda: Session("2s", grace="1s"),
}


@pytest.mark.parametrize("behind", [0, 3_600_000])
@pytest.mark.parametrize("kind", list(WINDOWS))
@pytest.mark.parametrize("seed", range(4))
def test_a_replay_gives_what_the_live_run_gave(kind: str, seed: int, behind: int) -> None:
    # behind: a producer an hour late, whose events the hub's clock must not make late
    parts = appended_records(seed, 400, behind)
    last = max(r[3] for recs in parts.values() for r in recs)
    rnd = random.Random(seed)
    live: list[tuple[int, int, int]] = []
    now = T0
    while now < last + 60_000:
        now += rnd.randint(0, 900)
        live.append((now, rnd.randrange(2), rnd.randint(1, 6)))
    live += [(last + 60_000, i, 10**6) for i in (0, 1)]
    replay = [(last + 60_000, i % 2, 37) for i in range(200)]

    def make() -> Any:
        agg = Count() if seed % 2 else Sum(lambda e: e.data["v"])
        return window_operator("v", ["a", "b"], WINDOWS[kind](), lambda e: e.data["k"], agg)

    a, b = feed(make(), parts, live), feed(make(), parts, replay)
    assert a.results and a.late, "the stream must close windows and have late events"
    assert (a.results, a.late, a.values, a.state) == (b.results, b.late, b.values, b.state)
    if behind:
        # The same stream on time: the watermark is the same, an hour later, so the
        # same events are late and the same windows close with the same values.
        on_time = feed(make(), appended_records(seed, 400), live)
        assert [ev["id"] for ev in a.late] == [ev["id"] for ev in on_time.late]
        assert [r["data"]["value"] for r in a.results] == [
            r["data"]["value"] for r in on_time.results
        ]
