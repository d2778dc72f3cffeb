"""Layer 1: the CloudEvent envelope and how it crosses HTTP.

- ``envelope``: :class:`Event`, :class:`Record`, checking and filling one event,
  serializing it as the log stores it.
- ``batch``: checking and filling a batch attribute by attribute; the ids the
  hub makes for a batch.
- ``http``: the CloudEvents HTTP binding (structured, batch and binary modes).
- ``nesting``: how deep an event may nest (:data:`~tidings.events.nesting.MAX_DEPTH`).

Imports only :mod:`tidings.errors`. Imported by every layer above.
"""

from tidings.events.envelope import (
    MAX_EVENT_BYTES,
    Event,
    Record,
    new_event_id,
    normalize_event,
    now_rfc3339,
    serialize,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "Event",
    "Record",
    "new_event_id",
    "normalize_event",
    "now_rfc3339",
    "serialize",
]
