"""Fixtures and helpers of the failover tests (tests/client/failover/): a real
hub, URLs that reach it (a forwarding node, a silent port), and reading it back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hubproc import HubFactory, HubProcess
from nodeproxy import Action, ForwardingNode, SilentPort

from tidings import Record
from tidings.client import AsyncClient, Reconnect

__all__ = ["FAST", "down", "every_record", "forwarding", "hub", "hubs", "proxy"]

FAST = Reconnect(initial_delay=0.05, max_delay=0.5)


@pytest.fixture
def hubs(tmp_path: Path) -> Iterator[HubFactory]:
    factory = HubFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def hub(hubs: HubFactory) -> HubProcess:
    return hubs.start("--webhook-allow-net", "127.0.0.0/8", fsync="always")


@pytest.fixture
def down() -> Iterator[SilentPort]:
    """A node down from the start: its port held for the test, never listening."""
    port = SilentPort()
    yield port
    port.close()


def forwarding(hub: HubProcess, drop: dict[str, Action] | None = None) -> ForwardingNode:
    """A node in front of ``hub``: requests whose ``METHOD path-suffix`` is in ``drop``
    get that action, the others are forwarded."""
    rules = drop or {}

    def rule(method: str, path: str) -> Action:
        for key, action in rules.items():
            want_method, _, suffix = key.partition(" ")
            if method == want_method and path.split("?")[0].endswith(suffix):
                return action
        return "forward"

    return ForwardingNode(hub.port, rule)


@pytest.fixture
async def proxy(hub: HubProcess) -> AsyncIterator[ForwardingNode]:
    async with forwarding(hub) as node:
        yield node


async def every_record(url: str, topic: str) -> list[Record]:
    """Every record of ``topic`` on the hub at ``url``."""
    out: list[Record] = []
    async with AsyncClient(url) as one:
        position = "earliest"
        while True:
            records, position = await one.read(topic, start=position, limit=1000)
            if not records:
                return out
            out += records
