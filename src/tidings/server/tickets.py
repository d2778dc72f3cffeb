"""Short-lived, single-use tickets that stand in for a bearer token in a URL.

A browser's ``EventSource`` can set no header, so ``GET /v1/topics/{topic}/sse``
has only its URL to authenticate with, and URLs are written to logs (the hub's,
a proxy's, the browser's history). ``POST /v1/ws/ticket``, authenticated by the
bearer token, answers a ticket that acts for that token (its scopes) on one
``?ticket=`` of ``/v1/ws`` or an SSE stream, once, within ``TICKET_TTL_S``.
A logged ticket is spent or expired by the time anyone reads the log.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from tidings.errors import RateLimited, Unauthorized
from tidings.server.auth import Token

TICKET_TTL_S = 30.0
MAX_TICKETS = 10_000  # unredeemed at once; each is gone after TICKET_TTL_S


class Tickets:
    """The tickets issued and not yet redeemed, each with its token and deadline."""

    def __init__(
        self,
        ttl_s: float = TICKET_TTL_S,
        limit: int = MAX_TICKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self.clock = clock
        # Insertion order is deadline order (one ttl), so the expired are at the front.
        self._open: dict[str, tuple[Token | None, float]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def issue(self, token: Token | None) -> str:
        """A new ticket for ``token`` (None: an open hub)."""
        now = self.clock()
        self._prune(now)
        if len(self._open) >= self.limit:
            raise RateLimited(
                f"{self.limit} tickets are waiting to be used; each expires after {self.ttl_s:g} s"
            )
        ticket = "tkt_" + secrets.token_urlsafe(24)
        self._open[ticket] = (token, now + self.ttl_s)
        return ticket

    def redeem(self, ticket: str) -> Token | None:
        """The token a ticket stands for; the ticket is spent. Unauthorized if unknown,
        spent or expired."""
        entry = self._open.pop(ticket, None)
        if entry is None or entry[1] <= self.clock():
            raise Unauthorized("unknown, used or expired ticket: get a new one from /v1/ws/ticket")
        return entry[0]

    def _prune(self, now: float) -> None:
        while self._open:
            ticket = next(iter(self._open))
            if self._open[ticket][1] > now:
                break
            del self._open[ticket]


__all__ = ["MAX_TICKETS", "TICKET_TTL_S", "Tickets"]
