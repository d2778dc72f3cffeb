"""A hub-wide budget of request body bytes held at once, across requests.

Each request's body is bounded (``max_request_bytes``), but many at once were
not: eight 15 MiB bodies read together added 135 MiB to the hub. The
:class:`BodyBudgetMiddleware` charges a request's body to one
:class:`BodyBudget` as the app reads it (the whole ``Content-Length`` at the
first read, else each chunk) and gives it back when the app has answered. A
body that does not fit is refused before it is read: 503 with ``Retry-After``
(:class:`~tidings.errors.ServerBusy`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.errors import ServerBusy


class BodyBudget:
    """Bytes of request bodies being read or parsed, at most ``max_bytes`` at once."""

    def __init__(self, max_bytes: int, retry_after_s: int = 1) -> None:
        self.max_bytes = max_bytes
        self.retry_after_s = retry_after_s
        self.held = 0
        self.peak = 0  # the most bytes it ever held: the bound, as measured

    def take(self, nbytes: int) -> None:
        """Charge ``nbytes``, or raise :class:`ServerBusy` if they do not fit now."""
        if self.held + nbytes > self.max_bytes:
            raise ServerBusy(
                f"the hub is reading {self.held} bytes of request bodies and {nbytes} more "
                f"would pass its budget of {self.max_bytes} (max_body_bytes_in_flight); "
                "try again shortly",
                retry_after_s=self.retry_after_s,
            )
        self.held += nbytes
        if self.held > self.peak:
            self.peak = self.held

    def give(self, nbytes: int) -> None:
        self.held -= nbytes


class BodyBudgetMiddleware:
    """Charges each HTTP request's body to ``budget`` while the app handles it."""

    def __init__(self, app: ASGIApp, budget: BodyBudget) -> None:
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        budget = self.budget
        declared = _content_length(scope)
        charged = 0  # bytes this request holds of the budget
        read = 0

        async def charged_receive() -> Message:
            nonlocal charged, read
            if declared is not None and charged == 0 and declared > 0:
                budget.take(declared)  # all of it at once: refused before any is read
                charged = declared
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > charged:
                    budget.take(read - charged)  # no length, or more than it said
                    charged = read
            return message

        try:
            await self.app(scope, charged_receive, send)
        finally:
            budget.give(charged)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


__all__ = ["BodyBudget", "BodyBudgetMiddleware"]
