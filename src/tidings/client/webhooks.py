"""The webhook calls of the clients: ``/v1/webhooks`` (admin scope when tokens are on).

:class:`AsyncWebhookCalls` is mixed into :class:`~tidings.client.async_client.AsyncClient`
and :class:`WebhookCalls` into the blocking :class:`~tidings.client.sync_client.Client`.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from tidings.client.calls import JsonCalls

T = TypeVar("T")
Since = str | int | datetime


def _path(id: str, tail: str = "") -> str:
    return "/v1/webhooks/" + quote(id, safe="") + tail


def _since(value: Since) -> str | int:
    return value.isoformat() if isinstance(value, datetime) else value


class AsyncWebhookCalls(JsonCalls):
    """The webhook calls of the async client (``/v1/webhooks``), mixed into
    :class:`~tidings.client.async_client.AsyncClient`."""

    async def create_webhook(
        self,
        url: str,
        topics: Iterable[str],
        *,
        types: Iterable[str] | None = None,
        description: str | None = None,
        rate_limit: float | None = None,
        ordering: Literal["none", "key"] | None = None,
        concurrency: int | None = None,
    ) -> dict[str, Any]:
        """Register an endpoint; the answer holds its ``id`` and ``secret`` (``whsec_…``)."""
        body: dict[str, Any] = {"url": url, "topics": list(topics)}
        for key, value in (
            ("types", None if types is None else list(types)),
            ("description", description),
            ("rate_limit", rate_limit),
            ("ordering", ordering),
            ("concurrency", concurrency),
        ):
            if value is not None:
                body[key] = value
        answer: dict[str, Any] = await self._call("POST", "/v1/webhooks", body)
        return answer

    async def webhooks(self) -> list[dict[str, Any]]:
        answer = await self._call("GET", "/v1/webhooks")
        return list(answer["webhooks"])

    async def webhook(self, id: str) -> dict[str, Any]:
        """One endpoint: its config, state, lag per topic and attempts in flight."""
        answer: dict[str, Any] = await self._call("GET", _path(id))
        return answer

    async def update_webhook(self, id: str, **changes: Any) -> dict[str, Any]:
        """Change ``url``, ``topics``, ``types``, ``description``, ``rate_limit``,
        ``ordering``, ``concurrency`` or ``enabled`` (re-enabling drains what it missed)."""
        answer: dict[str, Any] = await self._call("PATCH", _path(id), changes)
        return answer

    async def delete_webhook(self, id: str) -> None:
        await self._call("DELETE", _path(id))

    async def rotate_webhook_secret(
        self, id: str, grace: float | str | None = None
    ) -> dict[str, Any]:
        """A new secret; the old one keeps signing beside it for ``grace`` (default 24 h)."""
        body = {} if grace is None else {"grace": grace}
        answer: dict[str, Any] = await self._call("POST", _path(id, "/rotate-secret"), body)
        return answer

    async def webhook_attempts(
        self, id: str, status: str | None = None, limit: int = 100, before: int | None = None
    ) -> dict[str, Any]:
        """Attempts, newest first: ``{"attempts": [...], "next": before-id or None}``."""
        params = {"limit": str(limit)}
        if status is not None:
            params["status"] = status
        if before is not None:
            params["before"] = str(before)
        answer: dict[str, Any] = await self._call("GET", _path(id, "/attempts"), params=params)
        return answer

    async def replay_webhook(
        self, id: str, since: Since, topic: str | None = None
    ) -> dict[str, Any]:
        """Deliver again every matching event since a time or (with ``topic``) a position."""
        body: dict[str, Any] = {"since": _since(since)}
        if topic is not None:
            body["topic"] = topic
        answer: dict[str, Any] = await self._call("POST", _path(id, "/replay"), body)
        return answer

    async def test_webhook(self, id: str) -> dict[str, Any]:
        """Send one ``tidings.webhook.test`` event now; the answer holds the attempt."""
        answer: dict[str, Any] = await self._call("POST", _path(id, "/test"), {})
        return answer

    async def webhook_dead_letters(
        self, id: str, limit: int = 100, before: int | None = None
    ) -> dict[str, Any]:
        params = {"limit": str(limit)}
        if before is not None:
            params["before"] = str(before)
        answer: dict[str, Any] = await self._call(
            "GET", _path(id, "/dead-letters"), params=params
        )
        return answer

    async def replay_webhook_dead_letters(
        self, id: str, ids: Iterable[int] | None = None
    ) -> dict[str, Any]:
        """Send dead letters again (all of them, or those of ``ids``)."""
        body = {} if ids is None else {"ids": list(ids)}
        answer: dict[str, Any] = await self._call(
            "POST", _path(id, "/dead-letters/replay"), body
        )
        return answer


class WebhookCalls:
    """The same calls, blocking; see :class:`AsyncWebhookCalls`."""

    def _hooks(self) -> AsyncWebhookCalls:
        raise NotImplementedError

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        raise NotImplementedError

    def create_webhook(
        self,
        url: str,
        topics: Iterable[str],
        *,
        types: Iterable[str] | None = None,
        description: str | None = None,
        rate_limit: float | None = None,
        ordering: Literal["none", "key"] | None = None,
        concurrency: int | None = None,
    ) -> dict[str, Any]:
        return self._run(
            self._hooks().create_webhook(
                url,
                list(topics),
                types=None if types is None else list(types),
                description=description,
                rate_limit=rate_limit,
                ordering=ordering,
                concurrency=concurrency,
            )
        )

    def webhooks(self) -> list[dict[str, Any]]:
        return self._run(self._hooks().webhooks())

    def webhook(self, id: str) -> dict[str, Any]:
        return self._run(self._hooks().webhook(id))

    def update_webhook(self, id: str, **changes: Any) -> dict[str, Any]:
        return self._run(self._hooks().update_webhook(id, **changes))

    def delete_webhook(self, id: str) -> None:
        self._run(self._hooks().delete_webhook(id))

    def rotate_webhook_secret(self, id: str, grace: float | str | None = None) -> dict[str, Any]:
        return self._run(self._hooks().rotate_webhook_secret(id, grace))

    def webhook_attempts(
        self, id: str, status: str | None = None, limit: int = 100, before: int | None = None
    ) -> dict[str, Any]:
        return self._run(self._hooks().webhook_attempts(id, status, limit, before))

    def replay_webhook(self, id: str, since: Since, topic: str | None = None) -> dict[str, Any]:
        return self._run(self._hooks().replay_webhook(id, since, topic))

    def test_webhook(self, id: str) -> dict[str, Any]:
        return self._run(self._hooks().test_webhook(id))

    def webhook_dead_letters(
        self, id: str, limit: int = 100, before: int | None = None
    ) -> dict[str, Any]:
        return self._run(self._hooks().webhook_dead_letters(id, limit, before))

    def replay_webhook_dead_letters(
        self, id: str, ids: Iterable[int] | None = None
    ) -> dict[str, Any]:
        return self._run(
            self._hooks().replay_webhook_dead_letters(id, None if ids is None else list(ids))
        )
