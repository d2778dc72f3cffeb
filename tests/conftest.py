"""Fixtures of the server tests: real hub processes (see ``hubproc``) and an HTTP session.

``hub_factory`` starts as many hubs as a test needs, each configuration by its
own extra arguments; every hub it started is stopped at teardown (SIGTERM, then
SIGKILL if it does not exit in time). ``hub`` is one default hub shared by the
tests of a module: they use topics of their own (see ``hubapi.unique``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from hubproc import BackendHubs, HubFactory, HubProcess
from receivers import Receiver

from tidings.cluster.natsproc import NatsServer


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[HubFactory]:
    """Hubs of any configuration for one test: ``hub_factory.start("--no-auto-create")``."""
    factory = HubFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_hub_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubFactory]:
    """Hubs shared by the tests of one module."""
    factory = HubFactory(tmp_path_factory.mktemp("hubs"))
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def hub(module_hub_factory: HubFactory) -> HubProcess:
    """A default hub shared by a module's tests; each test uses topics of its own."""
    return module_hub_factory.start()


@pytest.fixture(scope="module", params=["embedded", "nats"])
def backend_hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubProcess]:
    """A default hub on each backend in turn: the embedded log, then a ``nats-server``
    of its own (JetStream, ``sync_interval: always``). A module opts in by making its
    ``hub`` this one; a test that cannot run on NATS skips itself there, saying why."""
    factory = HubFactory(tmp_path_factory.mktemp("hubs"))
    server: NatsServer | None = None
    try:
        if request.param == "embedded":
            yield factory.start()
        else:
            server = NatsServer(tmp_path_factory.mktemp("nats"), "hubs", sync="always")
            server.start().wait_ready()
            yield factory.start("--backend", server.url)
    finally:
        factory.close()
        if server is not None:
            server.kill()


@pytest.fixture(scope="module", params=["embedded", "nats"])
def backend_hubs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendHubs]:
    """As ``backend_hub``, for a module whose hubs take arguments of their own: the
    embedded log, then a ``nats-server`` of its own. A test that starts hubs of its
    own through ``hub_factory`` (restarts, the disk) runs on the embedded log only."""
    factory = HubFactory(tmp_path_factory.mktemp("hubs"))
    server: NatsServer | None = None
    try:
        if request.param == "nats":
            server = NatsServer(tmp_path_factory.mktemp("nats"), "hubs", sync="always")
            server.start().wait_ready()
        yield BackendHubs(request.param, factory, server)
    finally:
        factory.close()
        if server is not None:
            server.kill()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on a free loopback port (see ``receivers``)."""
    r = await Receiver().start()
    yield r
    await r.close()
