"""Where webhook endpoints, their attempts log and their dead letters are kept.

:class:`WebhookStore` is the seam; the embedded backend keeps it in SQLite
(``tidings.backends.embedded.webhooks``), the NATS backend in JetStream
(``tidings.backends.nats.webhooks``) and :class:`MemoryWebhookStore` in memory.
:class:`EndpointOwners` is the seam of a store shared by several nodes: which one
dispatches each endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

from tidings.errors import StorageUnavailable

Trigger = Literal["delivery", "dead-letter", "test"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST to an endpoint and how it ended."""

    endpoint: str
    time_ms: int
    msg_id: str
    topic: str | None
    partition: int | None
    offset: int | None
    attempt: int
    outcome: str  # success | gone | throttled | failed
    status: int | None
    latency_ms: float
    error: str | None
    response: str  # the first KiB of the answer's body
    trigger: Trigger = "delivery"
    id: int | None = None

    def view(self) -> dict[str, Any]:
        out = asdict(self)
        out["time"] = out.pop("time_ms")
        out["latency_ms"] = round(self.latency_ms, 3)
        out["status_class"] = "succeeded" if self.outcome == "success" else "failed"
        return out


@dataclass(frozen=True, slots=True)
class WebhookDeadLetter:
    """An event whose attempts were all spent, kept whole so it can be sent again."""

    endpoint: str
    time_ms: int
    topic: str
    partition: int
    offset: int
    msg_id: str
    payload: bytes
    attempts: int
    reason: str
    replaying: bool = False
    id: int | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time_ms,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "msg_id": self.msg_id,
            "attempts": self.attempts,
            "reason": self.reason,
            "replaying": self.replaying,
        }


class WebhookStore(Protocol):
    """Where endpoints, their attempts log and their dead letters are kept.

    The hub's :class:`~tidings.server.webhooks.service.WebhookService` uses it; a
    backend implements it. What an implementation owes: an endpoint saved or
    deleted, and a dead letter added, updated or removed, is durable when the
    call returns (a restart finds it); attempts may be written in batches, and
    ``retry_state`` answers from what was written; ``attempts`` and
    ``dead_letters`` page newest first by id, ``before`` excluded; deleting an
    endpoint deletes its attempts and dead letters with it.
    """

    async def load_endpoints(self) -> list[dict[str, Any]]: ...
    async def save_endpoint(self, row: dict[str, Any]) -> None: ...
    async def delete_endpoint(self, endpoint: str) -> None:
        """The endpoint, its attempts and its dead letters."""
        ...

    async def add_attempts(self, attempts: Sequence[Attempt]) -> None: ...
    async def attempts(
        self, endpoint: str, outcome: str | None, limit: int, before: int | None
    ) -> list[Attempt]:
        """Newest first; ``outcome`` "succeeded" or "failed" or one outcome's name."""
        ...

    async def prune_attempts(self, older_than_ms: int, keep: int) -> int: ...
    async def retry_state(
        self, endpoint: str, since_ms: int
    ) -> dict[tuple[str, int, int], tuple[int, int]]:
        """Records with delivery attempts since ``since_ms`` and no success: per
        (topic, partition, offset), the attempts made and the time of the last."""
        ...

    async def add_dead_letter(self, dead: WebhookDeadLetter) -> int: ...
    async def dead_letters(
        self, endpoint: str, limit: int, before: int | None, replaying: bool | None = None
    ) -> list[WebhookDeadLetter]: ...
    async def mark_replaying(self, endpoint: str, ids: Iterable[int] | None) -> int: ...
    async def update_dead_letter(self, dead: WebhookDeadLetter) -> None: ...
    async def remove_dead_letter(self, id: int) -> None: ...
    async def close(self) -> None: ...


def outcome_filter(outcome: str | None) -> tuple[str, ...] | None:
    """The outcomes a ``status`` filter selects."""
    if outcome is None:
        return None
    if outcome == "succeeded":
        return ("success",)
    if outcome == "failed":
        return ("gone", "throttled", "failed")
    return (outcome,)


class MemoryWebhookStore:
    """The same interface in memory, for tests of the layers above."""

    def __init__(self) -> None:
        self.endpoints: dict[str, dict[str, Any]] = {}
        self._attempts: list[Attempt] = []
        self._dead: dict[int, WebhookDeadLetter] = {}
        self._next = 1

    async def load_endpoints(self) -> list[dict[str, Any]]:
        return list(self.endpoints.values())

    async def save_endpoint(self, row: dict[str, Any]) -> None:
        self.endpoints[row["id"]] = row

    async def delete_endpoint(self, endpoint: str) -> None:
        self.endpoints.pop(endpoint, None)
        self._attempts = [a for a in self._attempts if a.endpoint != endpoint]
        self._dead = {k: d for k, d in self._dead.items() if d.endpoint != endpoint}

    async def add_attempts(self, attempts: Sequence[Attempt]) -> None:
        for a in attempts:
            self._attempts.append(replace(a, id=self._next))
            self._next += 1

    async def attempts(
        self, endpoint: str, outcome: str | None, limit: int, before: int | None
    ) -> list[Attempt]:
        wanted = outcome_filter(outcome)
        out = [
            a
            for a in reversed(self._attempts)
            if a.endpoint == endpoint
            and (wanted is None or a.outcome in wanted)
            and (before is None or (a.id or 0) < before)
        ]
        return out[:limit]

    async def prune_attempts(self, older_than_ms: int, keep: int) -> int:
        before = len(self._attempts)
        kept: list[Attempt] = []
        per: dict[str, int] = {}
        for a in reversed(self._attempts):
            n = per.get(a.endpoint, 0)
            if a.time_ms >= older_than_ms and n < keep:
                kept.append(a)
                per[a.endpoint] = n + 1
        self._attempts = kept[::-1]
        return before - len(self._attempts)

    async def retry_state(
        self, endpoint: str, since_ms: int
    ) -> dict[tuple[str, int, int], tuple[int, int]]:
        state: dict[tuple[str, int, int], tuple[int, int]] = {}
        succeeded: set[tuple[str, int, int]] = set()
        for a in self._attempts:
            if a.endpoint != endpoint or a.trigger != "delivery" or a.time_ms < since_ms:
                continue
            if a.topic is None or a.partition is None or a.offset is None:
                continue
            pos = (a.topic, a.partition, a.offset)
            if a.outcome == "success":
                succeeded.add(pos)
            made, last = state.get(pos, (0, 0))
            state[pos] = (max(made, a.attempt), max(last, a.time_ms))
        return {p: v for p, v in state.items() if p not in succeeded}

    async def add_dead_letter(self, dead: WebhookDeadLetter) -> int:
        i = self._next
        self._next += 1
        self._dead[i] = replace(dead, id=i)
        return i

    async def dead_letters(
        self, endpoint: str, limit: int, before: int | None, replaying: bool | None = None
    ) -> list[WebhookDeadLetter]:
        out = [
            d
            for i, d in sorted(self._dead.items(), reverse=True)
            if d.endpoint == endpoint
            and (before is None or i < before)
            and (replaying is None or d.replaying == replaying)
        ]
        return out[:limit]

    async def mark_replaying(self, endpoint: str, ids: Iterable[int] | None) -> int:
        chosen = None if ids is None else set(ids)
        n = 0
        for i, d in self._dead.items():
            if d.endpoint == endpoint and not d.replaying and (chosen is None or i in chosen):
                self._dead[i] = replace(d, replaying=True)
                n += 1
        return n

    async def update_dead_letter(self, dead: WebhookDeadLetter) -> None:
        if dead.id in self._dead:
            self._dead[dead.id] = dead

    async def remove_dead_letter(self, id: int) -> None:
        self._dead.pop(id, None)

    async def close(self) -> None:
        pass


class WebhookMoved(StorageUnavailable):
    """A call forwarded to a node that does not hold the endpoint (see
    :class:`EndpointOwners`): the forwarding node asks the holder again. Between nodes
    only; a client sees a plain 503 at most."""

    title = "Webhook moved"


class EndpointOwners(Protocol):
    """Which node dispatches each endpoint, when several nodes share one store (NATS).

    The :class:`~tidings.server.webhooks.service.WebhookService` of each node asks it;
    a backend whose nodes share webhooks implements it (on the embedded log there is
    none: the one node dispatches every endpoint). What an implementation owes: at
    most one node :meth:`holds` an endpoint at a time, as far as a lease can say so
    (the holder stops when it has not renewed for half the lease time); a holder that
    dies is replaced by the first contender to :meth:`claim` after the lease time;
    :meth:`forward` runs a call on the holder and answers what it answered (its
    error, raised again here, of the same class: :class:`WebhookMoved` from a node
    that no longer holds it).
    """

    async def start(
        self,
        serve: Callable[[str, str, dict[str, Any]], Awaitable[Any]],
        lost: Callable[[str], None],
    ) -> None:
        """Begin: ``serve(op, endpoint, body)`` answers calls other nodes forward here;
        ``lost(endpoint)`` is called when this node stops holding an endpoint."""
        ...

    def changes(self) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
        """Each endpoint's row as written (None: deleted) on any node, this one too,
        since the store's ``load_endpoints``."""
        ...

    async def claim(self, endpoint: str) -> bool:
        """Take the endpoint if nobody holds it or its holder's lease ran out; whether
        this node holds it now."""
        ...

    def holds(self, endpoint: str) -> bool: ...
    async def release(self, endpoint: str) -> None: ...

    async def forward(self, endpoint: str, op: str, body: dict[str, Any]) -> tuple[bool, Any]:
        """``(True, answer)`` from the node that holds the endpoint, if another does;
        ``(False, None)`` if this node holds it or nobody does."""
        ...

    async def close(self) -> None:
        """Release every endpoint held, so that other nodes take them at once."""
        ...
