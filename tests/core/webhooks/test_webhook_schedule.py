"""The webhook schedule and endpoint health, sans I/O: outcomes in, decisions out."""

from __future__ import annotations

import random

import pytest

from tidings.core.webhooks.config import parse_schedule
from tidings.core.webhooks.schedule import (
    DEFAULT_SCHEDULE_MS,
    TRANSITIONS,
    EndpointHealth,
    Outcome,
    RetrySchedule,
    State,
    TokenBucket,
    classify,
    parse_retry_after,
)
from tidings.errors import BadRequest

DAY = 86_400_000


def health(**kw: object) -> EndpointHealth:
    return EndpointHealth(rng=random.Random(7), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SUCCESS), (204, Outcome.SUCCESS), (299, Outcome.SUCCESS),
        (410, Outcome.GONE), (429, Outcome.THROTTLED), (503, Outcome.THROTTLED),
        (None, Outcome.FAILED), (301, Outcome.FAILED), (302, Outcome.FAILED),
        (400, Outcome.FAILED), (404, Outcome.FAILED), (500, Outcome.FAILED),
        (502, Outcome.FAILED), (100, Outcome.FAILED),
    ],
)  # fmt: skip
def test_classify(status: int | None, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_the_table_covers_every_state_and_outcome() -> None:
    assert set(TRANSITIONS) == {(s, o) for s in State for o in Outcome}


def test_default_schedule_is_the_documented_one() -> None:
    seconds = [d / 1000 for d in DEFAULT_SCHEDULE_MS]
    assert seconds == [0, 5, 300, 1800, 7200, 18000, 36000, 36000]


def test_jitter_stays_within_its_fraction() -> None:
    s = RetrySchedule((0, 1000, 60_000), jitter=0.2)
    rng = random.Random(1)
    assert s.delay_ms(0, rng) == 0
    delays = [s.delay_ms(1, rng) for _ in range(500)]
    assert all(d is not None and 800 <= d <= 1200 for d in delays)
    assert len(set(delays)) > 50  # spread, not one value
    assert s.delay_ms(3, rng) is None


def test_failures_retry_on_the_schedule_then_dead_letter() -> None:
    h = health(schedule=RetrySchedule((0, 10, 20), jitter=0))
    d1 = h.on_attempt(Outcome.FAILED, 1, now_ms=1000)
    assert (d1.action, d1.delay_ms) == ("retry", 10)
    assert h.state is State.FAILING and h.failing_since_ms == 1000
    d2 = h.on_attempt(Outcome.FAILED, 2, now_ms=1010)
    assert (d2.action, d2.delay_ms) == ("retry", 20)
    d3 = h.on_attempt(Outcome.FAILED, 3, now_ms=1030)
    assert d3.action == "dead" and "all 3 attempts failed" in d3.reason


def test_success_after_failures_drains_and_heals() -> None:
    h = health()
    h.on_attempt(Outcome.FAILED, 1, now_ms=0)
    d = h.on_attempt(Outcome.SUCCESS, 2, now_ms=5_000)
    assert d.action == "ack" and d.drain
    assert h.state is State.HEALTHY and h.failing_since_ms is None
    assert h.last_success_ms == 5_000
    assert not h.on_attempt(Outcome.SUCCESS, 1, now_ms=6_000).drain


def test_410_disables_and_releases() -> None:
    h = health()
    d = h.on_attempt(Outcome.GONE, 1, now_ms=0)
    assert d.action == "release" and d.disabled and "410" in d.disabled
    assert h.state is State.DISABLED
    # attempts still in flight when it was disabled go back to the cursor
    later = h.on_attempt(Outcome.FAILED, 1, now_ms=1)
    assert later.action == "release" and later.disabled is None
    assert h.on_attempt(Outcome.SUCCESS, 1, now_ms=2).action == "ack"
    assert h.state is State.DISABLED  # only a user enables it again
    h.enable()
    assert h.state is State.HEALTHY and h.disabled_reason is None


def test_retry_after_replaces_the_schedule_delay() -> None:
    h = health(schedule=RetrySchedule((0, 10, 20), jitter=0))
    d = h.on_attempt(Outcome.THROTTLED, 1, now_ms=0, retry_after_ms=7_000)
    assert (d.action, d.delay_ms) == ("retry", 7_000)
    # without the header, the schedule
    assert h.on_attempt(Outcome.THROTTLED, 2, now_ms=1, retry_after_ms=None).delay_ms == 20


def test_parse_retry_after() -> None:
    assert parse_retry_after("3", 0) == 3000
    assert parse_retry_after("  0 ", 0) == 0
    assert parse_retry_after(None, 0) is None
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after("-5", 0) is None
    assert parse_retry_after("99999999", 0) == DAY  # capped at a day
    http_date = "Wed, 21 Oct 2015 07:28:00 GMT"
    at = 1445412480000
    assert parse_retry_after(http_date, at - 2000) == 2000
    assert parse_retry_after(http_date, at + 2000) == 0


def test_disabled_after_failing_for_the_configured_time() -> None:
    h = health(disable_after_ms=5 * DAY)
    h.on_attempt(Outcome.FAILED, 1, now_ms=0)
    assert h.on_attempt(Outcome.FAILED, 2, now_ms=5 * DAY - 1).action == "retry"
    d = h.on_attempt(Outcome.FAILED, 3, now_ms=5 * DAY)
    assert d.action == "release" and d.disabled == "no successful delivery for 5 days"
    assert h.state is State.DISABLED


def test_a_success_resets_the_failure_clock() -> None:
    h = health(disable_after_ms=5 * DAY)
    h.on_attempt(Outcome.FAILED, 1, now_ms=0)
    h.on_attempt(Outcome.SUCCESS, 1, now_ms=4 * DAY)
    h.on_attempt(Outcome.FAILED, 1, now_ms=4 * DAY + 1)
    assert h.on_attempt(Outcome.FAILED, 2, now_ms=8 * DAY).action == "retry"


def test_new_records_while_down_go_one_probe_at_a_time_with_backoff() -> None:
    h = health(probe_after=3, probe_delay_ms=1000, probe_max_ms=4000)
    assert h.new_records_allowed(in_flight=3, concurrency=10, now_ms=0) == 7
    h.on_attempt(Outcome.FAILED, 1, now_ms=0)
    h.on_attempt(Outcome.FAILED, 1, now_ms=0)
    # failing, not yet down: a flapping endpoint keeps its concurrency
    assert h.state is State.FAILING
    assert h.new_records_allowed(0, 10, now_ms=0) == 10
    h.on_attempt(Outcome.FAILED, 1, now_ms=0)  # three in a row: down
    assert h.new_records_allowed(0, 10, now_ms=999) == 0
    assert h.new_records_allowed(0, 10, now_ms=1000) == 1
    assert h.new_records_allowed(1, 10, now_ms=1000) == 0  # one at a time
    h.on_attempt(Outcome.FAILED, 1, now_ms=1000)
    assert h.probe_at_ms() == 3000  # doubled
    for t in (3000, 7000, 11000):
        h.on_attempt(Outcome.FAILED, 1, now_ms=t)
    assert h.probe_at_ms() == 15000  # capped at probe_max
    h.on_attempt(Outcome.SUCCESS, 1, now_ms=15000)
    assert h.new_records_allowed(0, 10, now_ms=15000) == 10
    h.disable()
    assert h.new_records_allowed(0, 10, now_ms=15000) == 0


def test_health_survives_a_round_trip() -> None:
    h = health()
    h.on_attempt(Outcome.FAILED, 1, now_ms=123)
    again = health()
    again.restore(h.to_dict())
    assert again.to_dict() == h.to_dict()
    assert again.state is State.FAILING


def test_token_bucket() -> None:
    b = TokenBucket(rate=10, burst=2, tokens=2)
    assert b.available(0) == 2
    b.take(2, 0)
    assert b.available(0) == 0
    assert b.wait_ms(0) == 100
    assert b.available(100) == 1
    assert b.available(10_000) == 2  # never more than the burst


def test_parse_schedule() -> None:
    assert parse_schedule("0, 0.5,2").delays_ms == (0, 500, 2000)
    for bad in ("", "a", "1,,2", "-1", "nan", "1e9", ",".join("1" * 51)):
        with pytest.raises(BadRequest):
            parse_schedule(bad)
