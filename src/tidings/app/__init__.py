"""Layer 3: the App framework, a service as a few decorated handlers.

- ``app``: :class:`App`, ``@app.on``, starting and stopping, ``run_apps``.
- ``handlers``: a handler's options, payload decoding, ``Context``, middleware.
- ``runner``, ``pool``: one consumer per handler; the worker pool for concurrency.
- ``transport``: the seam to a hub (over HTTP, or the core in this process).
- ``remembering``: handled ids, for idempotency across redeliveries.
- ``harness``: ``TestHub`` and its virtual clock; ``asyncapi``; ``loading``
  (``module:app`` paths, log lines).

Imports ``client``, ``core``, ``backends`` (for ``embedded:``), ``events``,
``log`` and ``errors``. Imported by the CLI, :mod:`tidings.testing` and the
package's public API.
"""

from tidings.app.app import App, run_apps
from tidings.app.handlers import Backoff, Context, Envelope, Middleware

__all__ = ["App", "Backoff", "Context", "Envelope", "Middleware", "run_apps"]
