"""The topic calls of the async client, and finding events by id or correlation.

:class:`AsyncTopicCalls` is mixed into :class:`~tidings.client.async_client.AsyncClient`;
the blocking :class:`~tidings.client.sync_client.Client` mirrors each call.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from tidings.client.calls import JsonCalls
from tidings.events.envelope import Record

__all__ = ["AsyncTopicCalls", "topic_path"]


def topic_path(topic: str) -> str:
    """The path of a topic: ``/v1/topics/{topic}``, quoted."""
    return "/v1/topics/" + quote(topic, safe="")


class AsyncTopicCalls(JsonCalls):
    """The topic calls of the async client, mixed into
    :class:`~tidings.client.async_client.AsyncClient`: topics, and events found
    by id or correlation id."""

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        max_age: float | str | None = None,
        max_bytes: int | None = None,
        schemas: Literal["off", "validate", "required"] | None = None,
        compaction: Literal["none", "key"] | None = None,
        delete_retention: float | str | None = None,
    ) -> dict[str, Any]:
        """Create a topic, or set its partitions (which only grow) and retention.

        ``max_age`` is seconds or a duration such as ``"7d"``; ``max_bytes`` bounds
        each partition. ``schemas`` checks event data at publish against the
        registered schemas (``validate``; ``required`` also refuses a type with
        none). ``compaction="key"`` keeps only the latest event of each
        ``partitionkey``, and a tombstone (an event without data) for
        ``delete_retention`` (a duration, 24 h by default). Answers the topic as
        :meth:`topic` does.
        """
        body: dict[str, Any] = {"partitions": partitions}
        if max_age is not None or max_bytes is not None:
            body["retention"] = {"max_age": max_age, "max_bytes": max_bytes}
        if schemas is not None:
            body["schemas"] = schemas
        if compaction is not None:
            body["compaction"] = compaction
        if delete_retention is not None:
            body["delete_retention"] = delete_retention
        answer: dict[str, Any] = await self._call("PUT", topic_path(name), body)
        return answer

    async def topics(self) -> list[dict[str, Any]]:
        """Every topic, as :meth:`topic` describes it, by name."""
        answer = await self._call("GET", "/v1/topics")
        topics: list[dict[str, Any]] = answer["topics"]
        return topics

    async def topic(self, name: str) -> dict[str, Any]:
        """One topic: its partitions (first and next offsets, events, bytes) and retention."""
        answer: dict[str, Any] = await self._call("GET", topic_path(name))
        return answer

    async def delete_topic(self, name: str) -> None:
        """Delete a topic, its events and its groups."""
        await self._call("DELETE", topic_path(name))

    # -- finding events ------------------------------------------------------------------

    async def get_event(self, event_id: str) -> Record:
        """``GET /v1/events/{id}``: the record of an event, in whichever topic it is
        (the first published, if its id was used again); NotFound if none."""
        return Record.from_dict(await self._call("GET", "/v1/events/" + quote(event_id, safe="")))

    async def events_by_correlation(
        self, correlation_id: str, *, limit: int = 100, after: str | None = None
    ) -> tuple[list[Record], str | None]:
        """One page of the records carrying ``correlationid``, across topics, in publish
        order, and the ``after`` of the next page (None: no more)."""
        params = {"correlationid": correlation_id, "limit": str(limit)}
        if after is not None:
            params["after"] = after
        answer = await self._call("GET", "/v1/events", params=params)
        return [Record.from_dict(r) for r in answer["records"]], answer["next"]

    async def trace(self, correlation_id: str) -> list[Record]:
        """Every record of ``correlationid`` (an order's whole story), page after page."""
        records, after = await self.events_by_correlation(correlation_id, limit=1000)
        while after is not None:
            more, after = await self.events_by_correlation(
                correlation_id, limit=1000, after=after
            )
            records += more
        return records
