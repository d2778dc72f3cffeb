"""The view calls of the clients: ``/v1/views`` (see :mod:`tidings.server.views`).

:class:`AsyncViewCalls` is mixed into :class:`~tidings.client.async_client.AsyncClient`
and :class:`ViewCalls` into the blocking :class:`~tidings.client.sync_client.Client`.
Reading a view needs ``subscribe`` on every input topic; declaring, committing and
rebuilding, ``manage`` on every input. A missing view or key raises
:class:`~tidings.errors.ViewNotFound` (its ``fields`` name ``key`` for a key);
a ``min_position`` the view does not reach in time, :class:`~tidings.errors.ViewBehind`.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

from tidings.client.calls import JsonCalls

T = TypeVar("T")

MinPosition = str | Mapping[int, int] | None
"""A position token of an input (``"0:15,1:7"``), ``{partition: offset}``, or
``"latest"``: every event of every input appended before the call."""

DEFAULT_WAIT_S = 10.0


def _path(name: str, tail: str = "") -> str:
    return "/v1/views/" + quote(name, safe="") + tail


def _wait_params(
    min_position: MinPosition, topic: str | None, wait: float | None
) -> dict[str, str]:
    if min_position is None:
        return {}
    if isinstance(min_position, Mapping):
        min_position = ",".join(f"{p}:{o}" for p, o in sorted(min_position.items()))
    params = {"min_position": min_position}
    if topic is not None:
        params["topic"] = topic
    if wait is not None:
        params["wait"] = f"{round(wait * 1000)}ms"
    return params


class AsyncViewCalls(JsonCalls):
    """The view calls of the async client (``/v1/views``), mixed into
    :class:`~tidings.client.async_client.AsyncClient`."""

    async def put_view(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Declare view ``name`` (``{"kind", "inputs", "app", "window", "emit"}``); its
        description. The same kind and inputs again keep its state; others: Conflict."""
        answer: dict[str, Any] = await self._call("PUT", _path(name), dict(spec))
        return answer

    async def commit_view(
        self, name: str, generation: int, expect: int, events: Sequence[Mapping[str, Any]],
        partition: int = 0, route: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, int]:
        """Append a commit (changes and one checkpoint) to changelog partition
        ``partition`` (the task's) if it ends at ``expect`` and the view is at
        ``generation``: ``{"offset", "next"}``; else :class:`~tidings.errors.Conflict`
        with ``fields["next_offset"]`` and ``["generation"]``. ``route``: a routing
        task's copies, published to the view's repartition topic first."""
        body: dict[str, Any] = {
            "generation": generation, "expect": expect, "events": [dict(e) for e in events],
        }
        if partition:
            body["partition"] = partition
        if route is not None:
            body["route"] = [dict(e) for e in route]
        answer: dict[str, int] = await self._call("POST", _path(name, "/commit"), body)
        return answer

    async def view_members(
        self, name: str, member: str, leave: bool = False
    ) -> dict[str, Any]:
        """Heartbeat as ``member`` of the processes running partitioned view ``name``
        (``leave``: stop): ``{"member", "tasks", "task_count", "member_count",
        "heartbeat_ms", ...}``."""
        body: dict[str, Any] = {"member": member}
        if leave:
            body["leave"] = True
        answer: dict[str, Any] = await self._call("POST", _path(name, "/members"), body)
        return answer

    async def rebuild_view(
        self, name: str, partitioned: bool | None = None, repartition: bool | int | None = None
    ) -> dict[str, Any]:
        """Start the view over from its inputs' earliest events, under the next generation;
        ``partitioned`` lays it out anew with one task per input partition (or one task),
        ``repartition`` (true or a number of partitions) routed by key; both None: as
        it is."""
        body: dict[str, Any] = {} if partitioned is None else {"partitioned": partitioned}
        if repartition is not None:
            body["repartition"] = repartition
        answer: dict[str, Any] = await self._call("POST", _path(name, "/rebuild"), body)
        return answer

    async def views(self) -> list[dict[str, Any]]:
        """Every view the token may read, each with its lag per input."""
        answer: dict[str, Any] = await self._call("GET", "/v1/views")
        return list(answer["views"])

    async def view(self, name: str) -> dict[str, Any]:
        """A view's kind, inputs, generation, keys, positions, lag and last commit."""
        answer: dict[str, Any] = await self._call("GET", _path(name))
        return answer

    async def view_get(
        self,
        name: str,
        key: str,
        min_position: MinPosition = None,
        *,
        topic: str | None = None,
        wait: float | None = None,
    ) -> dict[str, Any]:
        """``{"key", "value", "position"}``; with ``min_position``, once the view reflects
        it (waiting up to ``wait`` s, 10 by default; ``topic`` names the input when
        the view has several). A key with a slash cannot be named in a path: scan
        for it with :meth:`view_keys`."""
        params = _wait_params(min_position, topic, wait)
        waits = DEFAULT_WAIT_S if wait is None and params else wait or 0
        answer: dict[str, Any] = await self._call(
            "GET", _path(name, "/keys/" + quote(key, safe="")), params=params, wait=waits
        )
        return answer

    async def view_keys(
        self,
        name: str,
        prefix: str = "",
        after: str | None = None,
        limit: int = 100,
        *,
        min_position: MinPosition = None,
        topic: str | None = None,
        wait: float | None = None,
    ) -> dict[str, Any]:
        """A page of keys in order: ``{"keys": [{"key", "value", "position"}], "next"}``;
        pass ``next`` as ``after`` for the next page (None: no more)."""
        params = {"limit": str(limit), **_wait_params(min_position, topic, wait)}
        if prefix:
            params["prefix"] = prefix
        if after is not None:
            params["after"] = after
        waits = DEFAULT_WAIT_S if wait is None and min_position is not None else wait or 0
        answer: dict[str, Any] = await self._call(
            "GET", _path(name, "/keys"), params=params, wait=waits
        )
        return answer


class ViewCalls:
    """The same calls, blocking; see :class:`AsyncViewCalls`."""

    def _view_calls(self) -> AsyncViewCalls:
        raise NotImplementedError

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        raise NotImplementedError

    def put_view(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return self._run(self._view_calls().put_view(name, spec))

    def commit_view(
        self, name: str, generation: int, expect: int, events: Sequence[Mapping[str, Any]],
        partition: int = 0, route: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, int]:
        return self._run(
            self._view_calls().commit_view(name, generation, expect, events, partition, route)
        )

    def view_members(self, name: str, member: str, leave: bool = False) -> dict[str, Any]:
        return self._run(self._view_calls().view_members(name, member, leave))

    def rebuild_view(
        self, name: str, partitioned: bool | None = None, repartition: bool | int | None = None
    ) -> dict[str, Any]:
        return self._run(self._view_calls().rebuild_view(name, partitioned, repartition))

    def views(self) -> list[dict[str, Any]]:
        return self._run(self._view_calls().views())

    def view(self, name: str) -> dict[str, Any]:
        return self._run(self._view_calls().view(name))

    def view_get(
        self,
        name: str,
        key: str,
        min_position: MinPosition = None,
        *,
        topic: str | None = None,
        wait: float | None = None,
    ) -> dict[str, Any]:
        return self._run(
            self._view_calls().view_get(name, key, min_position, topic=topic, wait=wait)
        )

    def view_keys(
        self,
        name: str,
        prefix: str = "",
        after: str | None = None,
        limit: int = 100,
        *,
        min_position: MinPosition = None,
        topic: str | None = None,
        wait: float | None = None,
    ) -> dict[str, Any]:
        return self._run(
            self._view_calls().view_keys(
                name, prefix, after, limit, min_position=min_position, topic=topic, wait=wait
            )
        )
