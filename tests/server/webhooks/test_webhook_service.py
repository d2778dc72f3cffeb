"""The webhook service in process, on the in-memory hub, behind its sender seam."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from tidings.core.hub import Hub
from tidings.core.webhooks.config import WebhookPolicy
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
    assert await service.store.load_endpoints() == []
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
    "url",
    ["http://①②⑦.0.0.1:9/x", "http://１２７.0.0.1:9/x", "http://0x7f.0.0.1:9/x"],  # noqa: RUF001
)
async def test_hosts_that_become_refused_addresses_are_never_connected(url: str) -> None:
    sender = AiohttpSender(AddressPolicy())
    try:
        result = await sender.send(url, b"{}", {}, 2.0)
    finally:
        await sender.close()
    assert result.status is None
    assert result.error is not None and result.error.startswith("refused"), result


async def test_a_receivers_cookies_are_never_sent_back() -> None:
    from aiohttp import web

    cookies: list[str | None] = []

    async def hook(request: web.Request) -> web.Response:
        cookies.append(request.headers.get("cookie"))
        response = web.Response(text="ok")
        response.set_cookie("session", "from-the-receiver")
        return response

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    # A host name, not an address: aiohttp's own jar keeps cookies of names only.
    allowed = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    sender = AiohttpSender(AddressPolicy(allowed))
    try:
        for _ in range(2):
            result = await sender.send(f"http://localhost:{port}/hook", b"{}", {}, 5.0)
            assert result.status == 200, result
    finally:
        await sender.close()
        await runner.cleanup()
    assert cookies == [None, None]


class FakeClock:
    """The hub's ``Clock`` seam: a time the test moves by hand."""

    def __init__(self) -> None:
        self.now_ms = 1_700_000_000_000

    def time_ms(self) -> int:
        return self.now_ms


class GatedSender(SlowChecks):
    """Sends succeed, each once the test lets one go."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Semaphore(0)

    async def check(self, url: str) -> None:
        pass

    async def send(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> SendResult:
        self.sent.append(body)
        await self.go.acquire()
        return SendResult(200, 0.1, None, "ok")


async def _until(cond: Callable[[], bool], seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)


async def test_records_leased_ahead_are_not_sent_past_their_lease() -> None:
    """Records leased ahead of the workers wait behind slow attempts; one whose lease
    an attempt could outlast goes back to the group unsent and is leased anew, so it
    is never on its way twice (its lease lapsed, and the group leased it again)."""
    clock = FakeClock()
    hub = Hub(MemoryStorage(), clock=clock)
    await hub.start()
    sender = GatedSender()
    # Attempts of at most 20 s: the endpoint's group leases for 20 + 30 s.
    service = WebhookService(
        hub, MemoryWebhookStore(), sender=sender, policy=WebhookPolicy(timeout_s=20)
    )
    await service.start()
    try:
        await service.create(
            {"url": "https://hooks.example.com/a", "topics": ["orders"], "concurrency": 1}
        )
        await hub.publish(
            "orders",
            [{"type": "t", "id": str(i), "specversion": "1.0", "source": "/x"} for i in range(3)],
        )
        # One worker, three records leased at once (two ahead); each attempt takes
        # its 20 s. The third would begin 40 s after its lease and could end at 60 s.
        for n in (1, 2, 3):
            await _until(lambda n=n: len(sender.sent) >= n)
            clock.now_ms += 20_000
            await asyncio.sleep(1.5)  # the pump looks again: a lapsed lease is leased anew
            sender.go.release()
        await _until(lambda: len(sender.sent) >= 4, 2.0)
        for _ in range(4):
            sender.go.release()
        await asyncio.sleep(0.2)
        ids = sorted(orjson.loads(body)["id"] for body in sender.sent)
        assert ids == ["0", "1", "2"], ids  # each once: none sent under a lapsed lease
    finally:
        for _ in range(4):
            sender.go.release()
        await service.close()
        await hub.close()
