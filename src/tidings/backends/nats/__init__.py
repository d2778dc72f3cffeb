"""The hub's storage over NATS JetStream: one stream per topic partition, metadata in KV.

``storage.NatsStorage`` and ``partition.NatsPartition`` implement the storage seam of
``tidings.core.storage``; ``linked`` makes appends across partitions all or nothing;
``log.NatsLog`` appends, reads and waits (``tail`` follows a partition);
``meta.MetaBucket`` is a compare-and-set KV store; ``connection`` holds the nats-py
connection and its retries; ``names`` maps topics to streams and subjects. Imports
errors and log (record types and the in-memory index) only.
"""

from tidings.backends.nats.connection import NatsConnection, NatsSettings, PubAck
from tidings.backends.nats.log import NatsLog
from tidings.backends.nats.meta import Entry, MetaBucket

__all__ = ["Entry", "MetaBucket", "NatsConnection", "NatsLog", "NatsSettings", "PubAck"]
