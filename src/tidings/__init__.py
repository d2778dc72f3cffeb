"""tidings: an event hub for event-driven systems.

A durable event log, pub/sub with consumer groups, live push and signed webhooks
in one process. See the README for a tour and ``docs/architecture.md`` for the
design.

This module is the public API: it re-exports from ``app``, ``client``, ``events``
and ``errors``, and nothing inside the package imports it. Beside it sit
:mod:`tidings.testing` (``TestHub``) and :mod:`tidings.webhooks` (``verify``).
"""

from tidings.app import App, Backoff, Context, Envelope
from tidings.client import AsyncClient, Client, Delivery
from tidings.errors import (
    BadPosition,
    BadRequest,
    Conflict,
    CorruptLog,
    Forbidden,
    GroupNotFound,
    InvalidEvent,
    NotFound,
    NotOneHub,
    OffsetOutOfRange,
    OutcomeUnknown,
    RateLimited,
    ServerBusy,
    StaleLease,
    StorageError,
    StorageUnavailable,
    TidingsError,
    TooLarge,
    TopicNotFound,
    Unauthorized,
    UnsupportedMediaType,
    UrlNotAllowed,
    ViewBehind,
    ViewNotFound,
    WebhookNotFound,
)
from tidings.events import Event, Record

__version__ = "0.1.0"

__all__ = [
    "App",
    "AsyncClient",
    "Backoff",
    "BadPosition",
    "BadRequest",
    "Client",
    "Conflict",
    "Context",
    "CorruptLog",
    "Delivery",
    "Envelope",
    "Event",
    "Forbidden",
    "GroupNotFound",
    "InvalidEvent",
    "NotFound",
    "NotOneHub",
    "OffsetOutOfRange",
    "OutcomeUnknown",
    "RateLimited",
    "Record",
    "ServerBusy",
    "StaleLease",
    "StorageError",
    "StorageUnavailable",
    "TidingsError",
    "TooLarge",
    "TopicNotFound",
    "Unauthorized",
    "UnsupportedMediaType",
    "UrlNotAllowed",
    "ViewBehind",
    "ViewNotFound",
    "WebhookNotFound",
    "__version__",
]
