"""The processes that share a partitioned view's tasks, and which task each one runs.

A partitioned view is split into tasks, one per input partition (and per partition
of its changelog). Every process of the app that runs the view is a member: it
joins and then heartbeats (``POST /v1/views/{name}/members``) and is answered the
tasks it runs. The hub spreads the tasks evenly over the live members, moving as
few as it can: a member keeps its tasks while it is live and under its share.

A task taken from a live member (a new member joined) is first released: the
member that held it is told on its next heartbeat, and only after that heartbeat
is the task given to its new owner. A member that leaves (a graceful stop) or
misses heartbeats for the session timeout is dropped and its tasks are given at
once. Assignment is advice, not the guard: each task commits with a compare and
set on its own changelog partition, so while a task moves, whichever of its old
and new owner commits first wins and the other gets 409 and reloads from the
changelog; the result stays exact.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tidings.errors import BadRequest, Conflict

__all__ = ["HEARTBEAT_MS", "SESSION_TIMEOUT_MS", "Members", "check_member"]

SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_MS = 1_000
MAX_MEMBER = 200  # characters of a member id
MAX_MEMBERS = 1000


def check_member(member: object) -> str:
    """A member id: a string of 1 to 200 characters, none a control character."""
    if (
        not isinstance(member, str)
        or not 1 <= len(member) <= MAX_MEMBER
        or any(ord(c) < 32 or ord(c) == 127 for c in member)
    ):
        raise BadRequest(
            f"member must be a string of 1 to {MAX_MEMBER} characters without control "
            f"characters naming the process (such as app@host:pid), not {member!r}",
            field="member",
        )
    return member


@dataclass(slots=True)
class Members:
    """The live members of one view and its task assignment (in the hub's memory:
    after a hub restart the members join again on their next heartbeat)."""

    tasks: int
    timeout_ms: int = SESSION_TIMEOUT_MS
    seen: dict[str, int] = field(default_factory=dict)  # member -> last heartbeat (ms)
    owner: dict[int, str] = field(default_factory=dict)  # task -> member told it runs it
    target: dict[int, str] = field(default_factory=dict)  # task -> member it goes to

    def resize(self, tasks: int) -> None:
        """The view's layout changed (another number of tasks): start over."""
        self.tasks = tasks
        self.owner.clear()
        self.target.clear()

    def heartbeat(self, member: str, now_ms: int, *, leave: bool = False) -> list[int]:
        """``member`` is alive (or leaves): the tasks it runs from now on."""
        self._expire(now_ms)
        if leave:
            self.seen.pop(member, None)
            self._drop(member)
            self._balance()
            return []
        if member not in self.seen and len(self.seen) >= MAX_MEMBERS:
            raise Conflict(
                f"the view has {MAX_MEMBERS} live members, its most: member {member!r} may "
                "join once one leaves or falls silent",
                field="member", limit="members", members=MAX_MEMBERS,
            )  # fmt: skip
        self.seen[member] = now_ms
        self._balance()
        # Tasks moving away from this member are released by this answer.
        for task, held in list(self.owner.items()):
            if held == member and self.target.get(task) != member:
                del self.owner[task]
        mine: list[int] = []
        for task in range(self.tasks):
            if self.target.get(task) != member:
                continue
            if self.owner.get(task) in (None, member):
                self.owner[task] = member
                mine.append(task)
        return mine

    def describe(self, now_ms: int) -> dict[str, Any]:
        """``{"members": {id: [tasks]}, "session_timeout_ms"}``: who runs what now."""
        self._expire(now_ms)
        runs: dict[str, list[int]] = {m: [] for m in sorted(self.seen)}
        for task, member in sorted(self.owner.items()):
            runs.setdefault(member, []).append(task)
        return {"members": runs, "session_timeout_ms": self.timeout_ms}

    def _expire(self, now_ms: int) -> None:
        gone = [m for m, at in self.seen.items() if now_ms - at > self.timeout_ms]
        for member in gone:
            del self.seen[member]
            self._drop(member)
        if gone:
            self._balance()

    def _drop(self, member: str) -> None:
        for table in (self.owner, self.target):
            for task in [t for t, m in table.items() if m == member]:
                del table[task]

    def _balance(self) -> None:
        """Spread the tasks over the live members, keeping each where it is while its
        member is under its share (``tasks // n``, one more for the first ones)."""
        live = sorted(self.seen)
        if not live:
            self.target.clear()
            return
        n = len(live)
        share = {m: self.tasks // n + (1 if i < self.tasks % n else 0) for i, m in enumerate(live)}
        # Members holding more keep their share first, so the biggest shares go to them.
        held: dict[str, list[int]] = {m: [] for m in live}
        for task in range(self.tasks):
            m = self.target.get(task)
            if m in held:
                held[m].append(task)
        by_load = sorted(live, key=lambda m: (-len(held[m]), m))
        quotas = sorted(share.values(), reverse=True)
        share = dict(zip(by_load, quotas, strict=True))
        loose: list[int] = [t for t in range(self.tasks) if self.target.get(t) not in held]
        for m in live:
            keep = held[m][: share[m]]
            loose.extend(held[m][share[m] :])
            held[m] = keep
        free = deque(sorted(loose))
        for m in live:
            while len(held[m]) < share[m] and free:
                held[m].append(free.popleft())
        self.target = {t: m for m, ts in held.items() for t in ts}
