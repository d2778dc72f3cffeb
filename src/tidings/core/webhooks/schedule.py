"""Webhook delivery, sans I/O: an attempt's outcome in, the next action out.

An attempt ends in one of four outcomes (:func:`classify`):

==========  ==============================================================
success     a 2xx answer within the timeout
gone        410: the receiver says the endpoint is gone for good
throttled   429 or 503: retried after its ``Retry-After`` when it gives one
failed      anything else: a timeout, a refused or reset connection, a
            3xx (redirects are never followed), any other 4xx or 5xx
==========  ==============================================================

The endpoint's health moves by this table (``TRANSITIONS``)::

    state     outcome              next state
    healthy   success              healthy
    healthy   failed | throttled   failing      (failing_since = now)
    failing   success              healthy      + drain: waiting retries are due at once
    failing   failed | throttled   failing      or disabled once failing for disable_after
    *         gone                 disabled     ("410 Gone")
    disabled  *                    disabled     (only the user enables it again)

The record an attempt carried gets one action: ``ack`` on success; ``retry``
after the schedule's next delay (or ``Retry-After``) while attempts remain;
``dead`` once they are exhausted; ``release`` (back to the cursor, undelivered,
its attempts kept) when the endpoint is or becomes disabled.

Once ``probe_after`` attempts in a row have failed, the endpoint is taken to be
down and new records stay in the log: one at a time may go out as a probe, no
sooner than ``probe_delay`` after the last failure (doubling up to
``probe_max``). A flapping endpoint, whose failures are scattered among
successes, keeps its full concurrency. The first success makes it healthy and drains what waits,
in the cursor's order, so an outage ends without anyone pressing "recover".

Nothing here awaits, sleeps or touches a socket; the dispatcher pumps it.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Literal

# The default schedule: the delay before each attempt, the first at once.
DEFAULT_SCHEDULE_MS = (
    0,
    5_000,
    300_000,
    1_800_000,
    7_200_000,
    18_000_000,
    36_000_000,
    36_000_000,
)
DEFAULT_DISABLE_AFTER_MS = 5 * 86_400_000
MAX_RETRY_AFTER_MS = 86_400_000


class Outcome(enum.Enum):
    SUCCESS = "success"
    GONE = "gone"
    THROTTLED = "throttled"
    FAILED = "failed"


class State(enum.Enum):
    HEALTHY = "healthy"
    FAILING = "failing"
    DISABLED = "disabled"


TRANSITIONS: dict[tuple[State, Outcome], State] = {
    (State.HEALTHY, Outcome.SUCCESS): State.HEALTHY,
    (State.HEALTHY, Outcome.FAILED): State.FAILING,
    (State.HEALTHY, Outcome.THROTTLED): State.FAILING,
    (State.HEALTHY, Outcome.GONE): State.DISABLED,
    (State.FAILING, Outcome.SUCCESS): State.HEALTHY,
    (State.FAILING, Outcome.FAILED): State.FAILING,  # or DISABLED: see EndpointHealth
    (State.FAILING, Outcome.THROTTLED): State.FAILING,
    (State.FAILING, Outcome.GONE): State.DISABLED,
    (State.DISABLED, Outcome.SUCCESS): State.DISABLED,
    (State.DISABLED, Outcome.FAILED): State.DISABLED,
    (State.DISABLED, Outcome.THROTTLED): State.DISABLED,
    (State.DISABLED, Outcome.GONE): State.DISABLED,
}


def classify(status: int | None) -> Outcome:
    """The outcome of an attempt that got ``status`` (None: no answer at all)."""
    if status is None:
        return Outcome.FAILED
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if status == 410:
        return Outcome.GONE
    if status in (429, 503):
        return Outcome.THROTTLED
    return Outcome.FAILED


def parse_retry_after(value: str | None, now_ms: int) -> int | None:
    """``Retry-After`` (RFC 9110 §10.2.3: seconds or an HTTP date) as a delay in ms."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return min(int(text) * 1000, MAX_RETRY_AFTER_MS)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0, min(int(when.timestamp() * 1000) - now_ms, MAX_RETRY_AFTER_MS))


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """The delay before each attempt; ``jitter`` spreads each by up to ± that fraction."""

    delays_ms: tuple[int, ...] = DEFAULT_SCHEDULE_MS
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not self.delays_ms:
            raise ValueError("a retry schedule needs at least one attempt")
        if any(d < 0 for d in self.delays_ms):
            raise ValueError("retry delays must not be negative")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    @property
    def attempts(self) -> int:
        return len(self.delays_ms)

    def delay_ms(self, attempts_made: int, rng: random.Random) -> int | None:
        """The delay before the next attempt, or None when ``attempts_made`` exhausts it."""
        if attempts_made >= len(self.delays_ms):
            return None
        base = self.delays_ms[attempts_made]
        if not self.jitter or not base:
            return base
        return max(0, round(base * (1 + rng.uniform(-self.jitter, self.jitter))))


RecordAction = Literal["ack", "retry", "dead", "release"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after an attempt: with its record, and with the endpoint."""

    action: RecordAction
    delay_ms: int = 0  # for retry
    reason: str = ""  # for dead
    drain: bool = False  # the endpoint recovered: make waiting retries due now
    disabled: str | None = None  # the endpoint was disabled by this attempt, and why


# One of each, shared (a Decision is frozen): an ack is the answer to every success.
_ACK = Decision("ack")
_ACK_DRAIN = Decision("ack", drain=True)


@dataclass(slots=True)
class EndpointHealth:
    """One endpoint's health and the rules above. Serializable with :meth:`to_dict`."""

    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    disable_after_ms: int = DEFAULT_DISABLE_AFTER_MS
    probe_after: int = 5
    probe_delay_ms: int = 1_000
    probe_max_ms: int = 60_000
    rng: random.Random = field(default_factory=random.Random)
    state: State = State.HEALTHY
    failing_since_ms: int | None = None
    last_failure_ms: int | None = None
    last_success_ms: int | None = None
    consecutive_failures: int = 0
    disabled_reason: str | None = None

    # -- what may go out ------------------------------------------------------------

    @property
    def down(self) -> bool:
        """Failing ``probe_after`` times in a row: new records wait, probes go one by one."""
        return self.state is State.FAILING and self.consecutive_failures >= self.probe_after

    def new_records_allowed(self, in_flight: int, concurrency: int, now_ms: int) -> int:
        """How many records not yet attempted may be leased now."""
        if self.state is State.DISABLED:
            return 0
        room = max(0, concurrency - in_flight)
        if not self.down:
            return room
        if in_flight or now_ms < self.probe_at_ms():
            return 0
        return min(room, 1)

    def probe_at_ms(self) -> int:
        """While down: when a new record may go out to see if the endpoint is back."""
        if not self.down or self.last_failure_ms is None:
            return 0
        steps = min(self.consecutive_failures - self.probe_after, 30)
        return self.last_failure_ms + min(self.probe_delay_ms << steps, self.probe_max_ms)

    # -- an attempt's outcome in, a decision out --------------------------------------

    def on_attempt(
        self,
        outcome: Outcome,
        attempts_made: int,
        now_ms: int,
        retry_after_ms: int | None = None,
    ) -> Decision:
        """``attempts_made`` counts the record's attempts including this one."""
        before = self.state
        after = TRANSITIONS[(before, outcome)]
        if outcome is Outcome.SUCCESS:
            if before is not State.DISABLED:
                self.last_success_ms = now_ms
                self.failing_since_ms = None
                self.consecutive_failures = 0
            self.state = after
            return _ACK_DRAIN if before is State.FAILING else _ACK
        if outcome is Outcome.GONE:
            return self._disable(before, "the endpoint answered 410 Gone")
        if before is State.DISABLED:
            return Decision("release")
        self.last_failure_ms = now_ms
        self.consecutive_failures += 1
        if self.failing_since_ms is None:
            self.failing_since_ms = now_ms
        self.state = after
        if now_ms - self.failing_since_ms >= self.disable_after_ms:
            return self._disable(
                before, f"no successful delivery for {_span(self.disable_after_ms)}"
            )
        delay = self.schedule.delay_ms(attempts_made, self.rng)
        if delay is None:
            return Decision(
                "dead", reason=f"{outcome.value}: all {self.schedule.attempts} attempts failed"
            )
        if outcome is Outcome.THROTTLED and retry_after_ms is not None:
            delay = retry_after_ms
        return Decision("retry", delay_ms=delay)

    def _disable(self, before: State, reason: str) -> Decision:
        self.state = State.DISABLED
        if before is State.DISABLED:
            return Decision("release")
        self.disabled_reason = reason
        return Decision("release", disabled=reason)

    # -- the user -------------------------------------------------------------------------

    def disable(self, reason: str = "disabled by a user") -> None:
        self.state = State.DISABLED
        self.disabled_reason = reason

    def enable(self) -> None:
        """Healthy again, with a fresh failure clock; the cursor drains what it missed."""
        self.state = State.HEALTHY
        self.disabled_reason = None
        self.failing_since_ms = None
        self.consecutive_failures = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "failing_since": self.failing_since_ms,
            "last_failure": self.last_failure_ms,
            "last_success": self.last_success_ms,
            "consecutive_failures": self.consecutive_failures,
            "disabled_reason": self.disabled_reason,
        }

    def restore(self, raw: dict[str, object]) -> None:
        def num(key: str) -> int | None:
            v = raw.get(key)
            return v if isinstance(v, int) else None

        self.state = State(raw.get("state", "healthy"))
        self.failing_since_ms = num("failing_since")
        self.last_failure_ms = num("last_failure")
        self.last_success_ms = num("last_success")
        self.consecutive_failures = num("consecutive_failures") or 0
        reason = raw.get("disabled_reason")
        self.disabled_reason = reason if isinstance(reason, str) else None


def _span(ms: int) -> str:
    for unit, size in (("days", 86_400_000), ("hours", 3_600_000), ("minutes", 60_000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size} {unit}"
    return f"{ms / 1000:g} seconds"


@dataclass(slots=True)
class TokenBucket:
    """A rate limit of ``rate`` sends per second, in bursts of up to ``burst``."""

    rate: float
    burst: float = 1.0
    tokens: float = 1.0
    updated_ms: int | None = None

    def _refill(self, now_ms: int) -> None:
        if self.updated_ms is not None:
            elapsed = max(0, now_ms - self.updated_ms) / 1000
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated_ms = now_ms

    def available(self, now_ms: int) -> int:
        """How many sends may start now."""
        self._refill(now_ms)
        return int(self.tokens)

    def take(self, n: int, now_ms: int) -> None:
        self._refill(now_ms)
        self.tokens -= n

    def wait_ms(self, now_ms: int) -> int:
        """How long until one more send may start."""
        self._refill(now_ms)
        if self.tokens >= 1:
            return 0
        # Capped, so a rate below what registration allows (an endpoint stored
        # before the check existed) waits a day rather than overflowing.
        return max(1, int(min((1 - self.tokens) / self.rate * 1000 + 0.999, 86_400_000)))
