"""Webhook endpoints, sans I/O: what is sent where, when to try again, how it is signed.

- ``config``: an endpoint's configuration, secrets and health, checked and serialized.
- ``schedule``: the retry schedule, jitter, probes, rate limits, ``Retry-After``.
- ``signing``: Standard Webhooks signatures and secrets.
- ``targets``: which URLs and addresses an endpoint may reach (SSRF checks).
- ``store``: the :class:`~tidings.core.webhooks.store.WebhookStore` seam, what an
  implementation owes, and the one in memory.

Imports ``core``'s patterns and positions and ``errors``. Imported by
``server.webhooks`` (delivery), ``backends.embedded`` (the SQLite store) and the
public :mod:`tidings.webhooks` (verifying on the receiver's side).
"""
