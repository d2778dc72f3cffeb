"""The shop's event contracts in the schema registry, and a breaking change caught before deploy.

The shop's services register what they emit and read (as each App does when it
starts); then a changed payments service, whose PaymentSucceeded now carries the
amount as text, is checked with ``tidings schemas check``: it exits 1 and names
shipping, the service that reads the amount as a number.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from hubproc import HubFactory

from examples.shop import inventory, notifications, payments, shipping
from tidings import AsyncClient, Conflict
from tidings.app.contracts import register
from tidings.app.transport import HttpTransport

CHANGED = '''
from typing import ClassVar

from pydantic import BaseModel

from tidings import App
from examples.shop.events import InventoryReserved


class PaymentSucceeded(BaseModel):
    event_type: ClassVar[str] = "payment.succeeded"
    event_topic: ClassVar[str] = "payments"
    order_id: str
    customer: str
    amount: str  # was a float: "12.50 EUR"
    discount: float = 0.0


app = App("payments")


@app.on("inventory", ordering="key")
async def charge(order: InventoryReserved) -> PaymentSucceeded:
    return PaymentSucceeded(order_id=order.order_id, customer=order.customer,
                            amount=f"{order.subtotal:.2f} EUR")
'''

ROOT = Path(__file__).resolve().parents[2]


def tidings(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{cwd}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )


async def test_a_breaking_change_names_the_service_that_would_break(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    hub = hub_factory.start()
    apps = [inventory.app, payments.app, shipping.app, notifications.app]
    transport = HttpTransport(hub.base_url)
    try:
        for app in apps:  # what each does at start
            await register(app, transport)
    finally:
        await transport.close()
    async with AsyncClient(hub.base_url) as client:
        paid = await client.schema("payment.succeeded")
        assert [p["name"] for p in paid["producers"]] == ["payments"]
        assert [c["name"] for c in paid["consumers"]] == ["shipping"]
        listed = {s["type"] for s in (await client.schemas())["schemas"]}
    assert {"order.placed", "inventory.reserved", "payment.succeeded", "payment.failed",
            "shipment.created", "customer.notified", "inventory.rejected"} <= listed

    # The shop as it is passes the check.
    ok = await asyncio.to_thread(
        tidings, "schemas", "check", "examples.shop.payments:app",
        "examples.shop.shipping:app", "--url", hub.base_url, cwd=ROOT,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok   payments: producer of payment.succeeded" in ok.stdout

    (tmp_path / "changed_payments.py").write_text(CHANGED)
    got = await asyncio.to_thread(
        tidings, "schemas", "check", "changed_payments:app", "--url", hub.base_url,
        cwd=tmp_path,
    )
    assert got.returncode == 1, got.stdout + got.stderr
    assert "FAIL payments: producer of payment.succeeded" in got.stdout
    assert "$.amount" in got.stdout
    assert "would break consumer shipping" in got.stdout
    as_json = await asyncio.to_thread(
        tidings, "schemas", "check", "changed_payments:app", "--url", hub.base_url, "--json",
        cwd=tmp_path,
    )
    assert as_json.returncode == 1
    assert '"name":"shipping"' in as_json.stdout

    # And the changed service does not start: the registry refuses its model.
    sys.path.insert(0, str(tmp_path))
    try:
        import changed_payments  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    changed_payments.app.hub = hub.base_url
    try:
        await changed_payments.app.start()
    except Conflict as exc:
        assert "cannot start" in exc.detail and "PaymentSucceeded" in exc.detail
        assert "shipping" in exc.detail
    else:
        await changed_payments.app.stop()
        raise AssertionError("the changed payments service started")
    async with AsyncClient(hub.base_url) as client:
        assert (await client.schema("payment.succeeded"))["latest"] == 1
