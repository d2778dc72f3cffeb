"""The embedded backend: one data directory, the segment log and SQLite.

- ``storage``: :class:`EmbeddedStorage`, the ``Storage`` seam on the segment log
  with topics, groups and positions in ``meta.sqlite3``.
- ``webhooks``: :class:`SqliteWebhookStore`, the ``WebhookStore`` seam in
  ``webhooks.sqlite3``.
- ``history``: ``SqliteHistoryStore``, the ``HistoryStore`` seam in
  ``history.sqlite3``.

Imports ``log``, ``core`` and ``errors``; imported by ``server.serve`` and
``app.transport``.
"""

from tidings.backends.embedded.storage import EmbeddedStorage
from tidings.backends.embedded.webhooks import SqliteWebhookStore

__all__ = ["EmbeddedStorage", "SqliteWebhookStore"]
