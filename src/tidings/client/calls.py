"""What the async client's groups of calls (topics, groups, schemas, views,
webhooks) need from the client they are mixed into: one JSON request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["JsonCalls"]


class JsonCalls(Protocol):
    """The one method the mixins call; :class:`~tidings.client.async_client.AsyncClient`
    implements it (see its ``_call``)."""

    async def _call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        params: Mapping[str, str] | None = None,
        wait: float = 0,
        resend: bool | None = None,
    ) -> Any:
        """A JSON request (``body`` None sends none) and its decoded JSON answer, if any;
        ``resend`` overrides the method's rule for sending it again on another node."""
        ...
