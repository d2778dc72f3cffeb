"""The log over NATS JetStream: one stream per topic partition, metadata in KV.

``log.NatsLog`` appends, reads and waits; ``meta.MetaBucket`` is a compare-and-set KV
store; ``connection`` holds the nats-py connection and its retries; ``names`` maps
topics to streams and subjects. Imports errors and log (record types) only; nothing
in the hub imports it yet.
"""

from tidings.backends.nats.connection import NatsConnection, NatsSettings, PubAck
from tidings.backends.nats.log import NatsLog
from tidings.backends.nats.meta import Entry, MetaBucket

__all__ = ["Entry", "MetaBucket", "NatsConnection", "NatsLog", "NatsSettings", "PubAck"]
