"""Layer 3, the only network I/O of the hub: HTTP, WebSocket, SSE and webhooks out.

- ``app``: the Starlette routes under ``/v1``; ``publish``, the publish route and
  the app that takes it ahead of the stack; ``auth`` (tokens and scopes),
  ``problems`` (RFC 9457 answers), ``metrics``, ``openapi``, ``asyncapi``.
- ``ws``, ``sse``, ``live``: live push over the WebSocket and SSE.
- ``webhooks/``: the routes, dispatchers and sender of outgoing webhooks.
- ``guard``, ``tickets``, ``redact``: what a foreign page may not make a browser
  send (Host, Origin, content type), one-use tickets for live streams, and no
  secret in a logged URL.
- ``protocol``, ``wsprotocol``, ``budget``, ``routing``: limits at the edge (heads,
  slow clients, connections, WebSocket frames, body bytes in flight) and a
  complete ``Allow``.
- ``history``: the sampler of the metrics history (``GET /v1/metrics/history``).
- ``serve``: builds a hub from its settings and runs it under uvicorn.
- ``static/``: the dashboard and the browser client.

Imports ``events``, ``log``, ``core``, ``backends`` and ``errors``. Imported only
by the CLI and the benchmarks.
"""
