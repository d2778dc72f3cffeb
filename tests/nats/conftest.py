"""Fixtures of the JetStream log's tests: real ``nats-server`` processes (see
``natsproc``) and a ``NatsLog`` connected to them.

``nats_server`` is one server with ``sync_interval: always``, shared by a module's
tests (each uses topics of its own); ``nats_cluster`` is three routed servers for one
test, since the fault tests kill them. Every server started is killed at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hubproc import HubFactory

from tidings.backends.nats import NatsLog, NatsSettings
from tidings.cluster.natsproc import NatsCluster, NatsServer


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"), "single", sync="always").start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


@pytest.fixture
async def nats_log(nats_server: NatsServer) -> AsyncIterator[NatsLog]:
    log = await NatsLog.connect(NatsSettings(servers=(nats_server.url,)))
    yield log
    await log.close()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "cluster", size=3, sync="always")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def nats(nats_server: NatsServer) -> NatsServer:
    """The module's nats-server, for the tests that run ``tidings serve`` nodes on it."""
    return nats_server


@pytest.fixture
def cluster(nats_cluster: NatsCluster) -> NatsCluster:
    """Three routed nats-servers of the test's own (R3 streams)."""
    return nats_cluster


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[HubFactory]:
    """``tidings serve`` processes of the test's own, each stopped at its end."""
    factory = HubFactory(tmp_path)
    yield factory
    factory.close()
