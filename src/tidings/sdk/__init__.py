"""The Python SDK: clients of the hub's HTTP API, async and blocking.

``AsyncClient`` (asyncio, on aiohttp) and ``Client`` (blocking, the same methods)
publish, read, subscribe (live over the WebSocket, or by long polls), manage
topics and consumer groups, and consume with acknowledgements. Errors the hub
answers are raised as :mod:`tidings.errors`. ``App`` turns a service into a few
decorated handlers (see :mod:`tidings.sdk.app`).
"""

from tidings.sdk.app import App, run_apps
from tidings.sdk.batching import PublishBatcher
from tidings.sdk.client import DEFAULT_URL, AsyncClient
from tidings.sdk.handlers import Backoff, Context, Envelope, Middleware
from tidings.sdk.live import LiveSubscription, Reconnect
from tidings.sdk.receiving import AsyncConsumer, AsyncMessage, AsyncSubscription, Delivery
from tidings.sdk.sync import Client, Consumer, Message, Subscription

__all__ = [
    "DEFAULT_URL",
    "App",
    "AsyncClient",
    "AsyncConsumer",
    "AsyncMessage",
    "AsyncSubscription",
    "Backoff",
    "Client",
    "Consumer",
    "Context",
    "Delivery",
    "Envelope",
    "LiveSubscription",
    "Message",
    "Middleware",
    "PublishBatcher",
    "Reconnect",
    "Subscription",
    "run_apps",
]
