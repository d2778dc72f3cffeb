"""Outgoing webhooks on the hub: routes, one dispatcher per endpoint, the sender.

- ``service``: :class:`WebhookService`, the endpoints and their dispatchers.
- ``dispatch``: an endpoint's workers, following its consumer groups.
- ``sender``: the network, behind the ``Sender`` seam; refuses private addresses.
- ``routes``: ``/v1/webhooks``.

Imports ``core`` (its ``webhooks`` package above all) and ``errors``; imported by
``server.app``, ``server.serve`` and ``server.metrics``.
"""
