"""Layer 3: clients of the hub's HTTP API, async and blocking.

``AsyncClient`` (asyncio, on aiohttp) and ``Client`` (blocking, the same methods)
publish, read, subscribe (live over the WebSocket, or by long polls), manage
topics, consumer groups and webhooks, and consume with acknowledgements. Errors
the hub answers are raised as :mod:`tidings.errors` (see ``problems``).

Imports ``events`` and ``errors`` only: a client knows the hub by its wire
protocol. Imported by the App framework's HTTP transport and the CLI.
"""

from tidings.client.async_client import DEFAULT_URL, AsyncClient
from tidings.client.batching import PublishBatcher
from tidings.client.live import LiveSubscription, Reconnect
from tidings.client.nodes import HubNodes
from tidings.client.receiving import AsyncConsumer, AsyncMessage, AsyncSubscription, Delivery
from tidings.client.sync_client import Client, Consumer, Message, Subscription

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "AsyncConsumer",
    "AsyncMessage",
    "AsyncSubscription",
    "Client",
    "Consumer",
    "Delivery",
    "HubNodes",
    "LiveSubscription",
    "Message",
    "PublishBatcher",
    "Reconnect",
    "Subscription",
]
