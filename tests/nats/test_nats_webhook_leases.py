"""A node's webhook service on a real NATS server, in process, behind its sender seam:
once the node stops holding an endpoint's lease (its renewals late past half the
lease time, on the lease's clock seam), it sends and acks nothing more for that
endpoint, even while its dispatcher waits its turn to stop (another change of
endpoints under way): the groups are the new holder's. A call forwarded to it then
is refused as moved (the forwarding node asks the holder again) and changes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from natsproc import NatsServer

from tidings.backends.nats import NatsSettings
from tidings.backends.nats.storage import NatsStorage
from tidings.backends.nats.webhookowners import NatsEndpointOwners
from tidings.backends.nats.webhooks import NatsWebhookStore
from tidings.core.hub import Hub
from tidings.core.webhooks.store import WebhookMoved
from tidings.server.webhooks.sender import SendResult
from tidings.server.webhooks.service import WebhookService

pytestmark = pytest.mark.timeout(60)



class GatedSender:
    """Sends succeed, each once the test lets one go."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.go = asyncio.Semaphore(0)

    async def check(self, url: str) -> None:
        pass

    async def send(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> SendResult:
        self.sent.append(body)
        await self.go.acquire()
        return SendResult(200, 0.1, None, "ok")

    async def close(self) -> None:
        pass


async def _until(cond: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within the time")


async def test_a_holder_that_lost_its_lease_sends_and_acks_nothing_more(
    nats: NatsServer,
) -> None:
    storage = NatsStorage(NatsSettings(servers=(nats.url,)))
    hub = Hub(storage)
    await hub.start()
    store = NatsWebhookStore(storage)
    owners = NatsEndpointOwners(store, lease_s=60.0)  # renewed every 15 s: not in here
    sender = GatedSender()
    service = WebhookService(hub, store, sender=sender, owners=owners)
    await service.start()
    held = False
    try:
        wh = await service.create(
            {"url": "https://hooks.example.com/a", "topics": ["orders"], "concurrency": 1}
        )
        group = f"webhook.{wh['id']}"
        await hub.publish(
            "orders",
            [{"type": "t", "id": str(i), "specversion": "1.0", "source": "/x"} for i in range(3)],
        )
        # One worker: the first record on its way, two leased ahead behind it.
        await _until(lambda: len(sender.sent) == 1)
        assert hub.group_info("orders", group)["lag"] == 3
        # Another change of endpoints under way: the dispatcher's stop waits its turn.
        await service._changing.acquire()
        held = True
        assert owners.leases is not None
        owners.leases.clock = lambda: time.monotonic() + 3600.0  # renewals far too late
        assert not owners.holds(wh["id"])  # lost: the service is told
        sender.go.release()  # the attempt under way succeeds
        await asyncio.sleep(1.0)
        assert len(sender.sent) == 1, "sent a record after the lease was lost"
        assert hub.group_info("orders", group)["lag"] == 3, "acked after the lease was lost"
    finally:
        for _ in range(4):
            sender.go.release()
        if held:
            service._changing.release()
        await service.close()
        await hub.close()


async def test_a_call_forwarded_to_a_node_without_the_lease_is_refused_as_moved(
    nats: NatsServer,
) -> None:
    storage = NatsStorage(NatsSettings(servers=(nats.url,)))
    hub = Hub(storage)
    await hub.start()
    store = NatsWebhookStore(storage)
    owners = NatsEndpointOwners(store, lease_s=60.0)
    service = WebhookService(hub, store, sender=GatedSender(), owners=owners)
    await service.start()
    try:
        wh = await service.create(
            {"url": "https://hooks.example.com/b", "topics": ["orders"], "concurrency": 1}
        )
        assert owners.leases is not None
        owners.leases.clock = lambda: time.monotonic() + 3600.0  # renewals far too late
        with pytest.raises(WebhookMoved):
            await service.run_here("patch", wh["id"], {"concurrency": 5})
        with pytest.raises(WebhookMoved):
            await service.run_here("view", wh["id"], {})
        assert service.get(wh["id"]).config.concurrency == 1
    finally:
        await service.close()
        await hub.close()
