"""The Python SDK: clients of the hub's HTTP API, async and blocking.

``AsyncClient`` (asyncio, on aiohttp) and ``Client`` (blocking, the same methods)
publish, read, subscribe (live over the WebSocket, or by long polls), manage
topics and consumer groups, and consume with acknowledgements. Errors the hub
answers are raised as :mod:`tidings.errors`.
"""

from tidings.sdk.batching import PublishBatcher
from tidings.sdk.client import DEFAULT_URL, AsyncClient
from tidings.sdk.live import LiveSubscription, Reconnect
from tidings.sdk.receiving import AsyncConsumer, AsyncMessage, AsyncSubscription, Delivery
from tidings.sdk.sync import Client, Consumer, Message, Subscription

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "AsyncConsumer",
    "AsyncMessage",
    "AsyncSubscription",
    "Client",
    "Consumer",
    "Delivery",
    "LiveSubscription",
    "Message",
    "PublishBatcher",
    "Reconnect",
    "Subscription",
]
