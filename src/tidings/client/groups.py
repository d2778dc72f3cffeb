"""The consumer-group calls of the async client: ``/v1/topics/{topic}/groups``.

:class:`AsyncGroupCalls` is mixed into :class:`~tidings.client.async_client.AsyncClient`;
the blocking :class:`~tidings.client.sync_client.Client` mirrors each call.
A group leases events to its consumers; each is acknowledged within the
group's ``ack_wait`` or delivered again, and dead-lettered after ``max_deliver``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from tidings.client.calls import JsonCalls
from tidings.client.receiving import Delivery

__all__ = ["AsyncGroupCalls", "Leases", "Seek", "group_path"]

Leases = str | Delivery | Iterable[str | Delivery]
"""One lease, one delivery, or several of either."""
Seek = Literal["earliest", "latest"] | str | int | datetime | Mapping[str, Any]
"""earliest, latest, a time (RFC 3339, a datetime or ms since the epoch), a position
token such as ``"0:15,1:7"``, or ``{"partition": p, "offset": o}``."""


def group_path(topic: str, group: str) -> str:
    """The path of a group: ``/v1/topics/{topic}/groups/{group}``, each part quoted."""
    return "/v1/topics/" + quote(topic, safe="") + "/groups/" + quote(group, safe="")


class AsyncGroupCalls(JsonCalls):
    """The consumer-group calls of the async client, mixed into
    :class:`~tidings.client.async_client.AsyncClient`: groups, fetch, ack, nack,
    seek, redrive."""

    async def create_group(
        self,
        topic: str,
        group: str,
        *,
        start: Literal["earliest", "latest"] = "earliest",
        ack_wait: float | str = 30,
        max_deliver: int = 5,
        dead_letter_topic: str | None = None,
        ordering: Literal["none", "key"] = "none",
        types: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Create a consumer group on ``topic``, or change its settings.

        An event leased and not acknowledged within ``ack_wait`` seconds is delivered
        again; after ``max_deliver`` deliveries it moves to ``dead_letter_topic``
        (default ``{topic}.dlq``). ``ordering="key"`` leases no event while an earlier
        one with the same key is in flight. Answers the group as :meth:`group` does.
        """
        body: dict[str, Any] = {
            "start": start,
            "ack_wait": ack_wait,
            "max_deliver": max_deliver,
            "ordering": ordering,
        }
        if dead_letter_topic is not None:
            body["dead_letter_topic"] = dead_letter_topic
        if types is not None:
            body["types"] = [types] if isinstance(types, str) else list(types)
        answer: dict[str, Any] = await self._call("PUT", group_path(topic, group), body)
        return answer

    async def group(self, topic: str, group: str) -> dict[str, Any]:
        """One group: settings, lag and pending per partition, delivered, dead-lettered."""
        answer: dict[str, Any] = await self._call("GET", group_path(topic, group))
        return answer

    async def groups(self) -> list[dict[str, Any]]:
        """Every consumer group of every topic, as :meth:`group` describes it."""
        answer = await self._call("GET", "/v1/groups")
        groups: list[dict[str, Any]] = answer["groups"]
        return groups

    async def delete_group(self, topic: str, group: str) -> None:
        """Delete a consumer group and its positions."""
        await self._call("DELETE", group_path(topic, group))

    async def fetch(
        self,
        topic: str,
        group: str,
        max: int = 10,
        wait: float = 0,
        types: Iterable[str] | None = None,
    ) -> list[Delivery]:
        """Lease up to ``max`` events for this group; ``wait`` (seconds) long-polls.

        Acknowledge each with :meth:`ack` within the group's ``ack_wait``, or it is
        delivered again.
        """
        body: dict[str, Any] = {"max": max, "wait": wait}
        if types is not None:
            body["types"] = [types] if isinstance(types, str) else list(types)
        answer = await self._call("POST", group_path(topic, group) + "/fetch", body, wait=wait)
        return [Delivery.from_dict(r) for r in answer["records"]]

    async def ack(self, topic: str, group: str, leases: Leases) -> int:
        """Mark leased events done; answers how many.

        All or nothing: if any lease expired or was re-leased, :class:`~tidings.StaleLease`
        names them in ``fields["stale"]`` and nothing changes. No leases, no request.
        """
        names = _lease_list(leases)
        if not names:
            return 0
        answer = await self._call("POST", group_path(topic, group) + "/ack", {"leases": names})
        return int(answer["acked"])

    async def nack(self, topic: str, group: str, leases: Leases, delay: float = 0) -> int:
        """Hand leased events back, due again after ``delay`` seconds; answers how many."""
        names = _lease_list(leases)
        if not names:
            return 0
        answer = await self._call(
            "POST", group_path(topic, group) + "/nack", {"leases": names, "delay": delay}
        )
        return int(answer["nacked"])

    async def seek(self, topic: str, group: str, to: Seek) -> str:
        """Move the group to ``to``; answers its new position token. Live leases go stale.

        ``to`` is earliest, latest, a time (RFC 3339, a datetime, or ms since the
        epoch), a position token or ``{"partition": p, "offset": o}``.
        """
        target: object = to.isoformat() if isinstance(to, datetime) else to
        if isinstance(target, Mapping):
            target = dict(target)
        answer = await self._call("POST", group_path(topic, group) + "/seek", {"to": target})
        return str(answer["positions"])

    async def redrive(self, topic: str, group: str) -> int:
        """Publish the group's dead letters again on its topic, each once (same ids,
        the ``dlq*`` attributes removed); answers how many went back."""
        answer = await self._call("POST", group_path(topic, group) + "/redrive", {})
        return int(answer["redriven"])


def _lease_list(leases: Leases) -> list[str]:
    if isinstance(leases, str | Delivery):
        leases = [leases]
    return [x.lease if isinstance(x, Delivery) else x for x in leases]
