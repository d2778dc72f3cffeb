"""The schema registry calls of the clients: ``/v1/schemas``.

:class:`AsyncSchemaCalls` is mixed into :class:`~tidings.client.async_client.AsyncClient`
and :class:`SchemaCalls` into the blocking :class:`~tidings.client.sync_client.Client`.
Registering needs admin or the token's ``schemas`` scope on the type; reading, any token.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import quote

from tidings.client.calls import JsonCalls

T = TypeVar("T")


def _path(etype: str, tail: str = "") -> str:
    return "/v1/schemas/" + quote(etype, safe="") + tail


class AsyncSchemaCalls(JsonCalls):
    """The schema registry calls of the async client (``/v1/schemas``), mixed into
    :class:`~tidings.client.async_client.AsyncClient`."""

    async def schemas(self) -> dict[str, Any]:
        """Every registered type (``schemas``) and the types seen with none (``unregistered``)."""
        answer: dict[str, Any] = await self._call("GET", "/v1/schemas")
        return answer

    async def schema(self, etype: str) -> dict[str, Any]:
        """A type's versions, compatibility, producers, consumers and failures at publish."""
        answer: dict[str, Any] = await self._call("GET", _path(etype))
        return answer

    async def schema_version(self, etype: str, version: int | str = "latest") -> dict[str, Any]:
        """One version: ``{"type", "version", "uri", "schema"}``."""
        answer: dict[str, Any] = await self._call(
            "GET", _path(etype, f"/versions/{quote(str(version), safe='')}")
        )
        return answer

    async def put_schema(
        self, etype: str, schema: Any, *, producer: str | None = None
    ) -> dict[str, Any]:
        """Register ``schema`` for ``etype``: a new version, or the one it already is.
        An incompatible schema raises :class:`~tidings.errors.Conflict` naming each change."""
        body: dict[str, Any] = {"schema": schema}
        if producer is not None:
            body["producer"] = producer
        answer: dict[str, Any] = await self._call("PUT", _path(etype), body)
        return answer

    async def check_schema(
        self, etype: str, schema: Any, *, producer: str | None = None
    ) -> dict[str, Any]:
        """Whether ``schema`` would be accepted: ``compatible``, ``changes``, ``consumers``."""
        body: dict[str, Any] = {"schema": schema}
        if producer is not None:
            body["producer"] = producer
        answer: dict[str, Any] = await self._call("POST", _path(etype, "/check"), body)
        return answer

    async def configure_schema(self, etype: str, compatibility: str) -> dict[str, Any]:
        """Set the compatibility mode: none, backward (default), forward, full, ``*_transitive``."""
        answer: dict[str, Any] = await self._call(
            "PUT", _path(etype, "/config"), {"compatibility": compatibility}
        )
        return answer

    async def put_schema_consumer(self, etype: str, name: str, schema: Any) -> dict[str, Any]:
        """Record that app ``name`` reads ``etype`` with ``schema`` (Conflict if it cannot)."""
        answer: dict[str, Any] = await self._call(
            "PUT", _path(etype, "/consumers/" + quote(name, safe="")), {"schema": schema}
        )
        return answer

    async def inferred_schema(self, etype: str) -> dict[str, Any]:
        """A schema inferred from the type's recent events, to review and adopt."""
        answer: dict[str, Any] = await self._call("GET", _path(etype, "/inferred"))
        return answer


class SchemaCalls:
    """The same calls, blocking; see :class:`AsyncSchemaCalls`."""

    def _schema_calls(self) -> AsyncSchemaCalls:
        raise NotImplementedError

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        raise NotImplementedError

    def schemas(self) -> dict[str, Any]:
        return self._run(self._schema_calls().schemas())

    def schema(self, etype: str) -> dict[str, Any]:
        return self._run(self._schema_calls().schema(etype))

    def schema_version(self, etype: str, version: int | str = "latest") -> dict[str, Any]:
        return self._run(self._schema_calls().schema_version(etype, version))

    def put_schema(self, etype: str, schema: Any, *, producer: str | None = None) -> dict[str, Any]:
        return self._run(self._schema_calls().put_schema(etype, schema, producer=producer))

    def check_schema(
        self, etype: str, schema: Any, *, producer: str | None = None
    ) -> dict[str, Any]:
        return self._run(self._schema_calls().check_schema(etype, schema, producer=producer))

    def configure_schema(self, etype: str, compatibility: str) -> dict[str, Any]:
        return self._run(self._schema_calls().configure_schema(etype, compatibility))

    def put_schema_consumer(self, etype: str, name: str, schema: Any) -> dict[str, Any]:
        return self._run(self._schema_calls().put_schema_consumer(etype, name, schema))

    def inferred_schema(self, etype: str) -> dict[str, Any]:
        return self._run(self._schema_calls().inferred_schema(etype))
