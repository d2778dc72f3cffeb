"""The webhook service in process, on the in-memory hub, behind its sender seam."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tidings.core.hub import Hub
from tidings.core.webhooks.store import MemoryWebhookStore
from tidings.core.webhooks.targets import AddressPolicy
from tidings.log.memory import MemoryStorage
from tidings.server.webhooks.sender import AiohttpSender, SendResult
from tidings.server.webhooks.service import WebhookService


class SlowChecks:
    """A sender whose URL checks take a while (a DNS lookup) and whose sends succeed."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def check(self, url: str) -> None:
        await asyncio.sleep(0.05)

    async def send(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> SendResult:
        self.sent.append(body)
        return SendResult(200, 0.1, None, "ok")

    async def close(self) -> None:
        pass


@pytest.fixture
async def service() -> AsyncIterator[WebhookService]:
    hub = Hub(MemoryStorage())
    await hub.start()
    svc = WebhookService(hub, MemoryWebhookStore(), sender=SlowChecks())
    await svc.start()
    yield svc
    await svc.close()
    await hub.close()


async def test_changes_at_once_leave_one_dispatcher_and_no_deleted_endpoint(
    service: WebhookService,
) -> None:
    wh = await service.create({"url": "https://hooks.example.com/a", "topics": ["orders"]})
    await asyncio.gather(
        service.patch(wh["id"], {"url": "https://hooks.example.com/b"}),
        service.patch(wh["id"], {"concurrency": 3}),
    )
    running = [d for d in service.dispatchers.values() if d.running]
    assert len(running) == 1 and running[0].ep.config.concurrency == 3
    results = await asyncio.gather(
        service.patch(wh["id"], {"url": "https://hooks.example.com/c"}),
        service.delete(wh["id"]),
        return_exceptions=True,
    )
    assert results[1] is None
    assert wh["id"] not in service.endpoints and service.dispatchers == {}
    assert service.store.load_endpoints() == []
    assert "webhook." + wh["id"] not in service.hub.topics["orders"].groups


async def test_a_deleted_webhook_group_goes_on_from_the_end(service: WebhookService) -> None:
    hub = service.hub
    sender = service.sender
    assert isinstance(sender, SlowChecks)
    wh = await service.create({"url": "https://hooks.example.com/a", "topics": ["orders"]})
    await hub.publish("orders", [{"type": "a", "id": "1", "specversion": "1.0", "source": "/x"}])
    for _ in range(100):
        if sender.sent:
            break
        await asyncio.sleep(0.02)
    await hub.delete_group("orders", "webhook." + wh["id"])  # an admin's slip
    await asyncio.sleep(1.5)
    await hub.publish("orders", [{"type": "b", "id": "2", "specversion": "1.0", "source": "/x"}])
    for _ in range(100):
        if len(sender.sent) >= 2:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    assert [b'"type":"a"' in x for x in sender.sent] == [True, False]  # "a" not sent again


@pytest.mark.parametrize(
    # Digits of other scripts, on purpose: yarl makes them plain before connecting.
    "url", ["http://①②⑦.0.0.1:9/x", "http://１２７.0.0.1:9/x", "http://0x7f.0.0.1:9/x"]  # noqa: RUF001
)
async def test_hosts_that_become_refused_addresses_are_never_connected(url: str) -> None:
    sender = AiohttpSender(AddressPolicy())
    try:
        result = await sender.send(url, b"{}", {}, 2.0)
    finally:
        await sender.close()
    assert result.status is None
    assert result.error is not None and result.error.startswith("refused"), result
