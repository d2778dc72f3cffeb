"""The one narrow interface between the hub and where its log lives.

The embedded backend (``tidings.backends.embedded.storage``) keeps partitions in the
segment log of ``tidings.log`` and metadata in SQLite; ``tidings.log.memory``
keeps both in memory for tests. A scale-out backend (NATS JetStream) implements
the same two protocols; nothing above the core changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from tidings.log.partition import GroupRow, LogRecord, Positions, Retention

__all__ = ["GroupRow", "LogRecord", "PartitionStore", "Positions", "Retention", "Storage"]


class PartitionStore(Protocol):
    """One partition: an append-only sequence of records."""

    @property
    def start_offset(self) -> int: ...
    @property
    def end_offset(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...

    def append(
        self, payloads: Sequence[bytes], timestamp_ms: int | None = None
    ) -> Awaitable[int]:
        """Assign offsets now; resolve with the first once durable by the hub's policy."""
        ...

    def read(
        self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20
    ) -> list[LogRecord]: ...

    def offset_for_time(self, ts_ms: int) -> int: ...

    async def wait(self, offset: int, timeout: float | None = None) -> bool:
        """True once a record at ``offset`` is readable; False on timeout or close."""
        ...

    def apply_retention(self, now_ms: int | None = None) -> int: ...


class Storage(Protocol):
    """Partitions and the hub's metadata (topics, groups, their positions)."""

    def open_partition(self, topic: str, partition: int, retention: Retention) -> PartitionStore:
        ...

    async def drop_topic(self, topic: str) -> None:
        """Close and delete every partition of ``topic`` and its metadata."""
        ...

    def load_topics(self) -> dict[str, dict[str, Any]]: ...
    def save_topic(self, topic: str, config: dict[str, Any]) -> None: ...

    def load_groups(self) -> list[GroupRow]:
        """(topic, group, config, positions) for every group."""
        ...

    def save_group(self, topic: str, group: str, config: dict[str, Any]) -> None: ...
    def save_positions(
        self, topic: str, group: str, positions: Positions
    ) -> None: ...
    def delete_group(self, topic: str, group: str) -> None: ...

    async def close(self) -> None:
        """Finish queued appends, make everything durable, close."""
        ...
