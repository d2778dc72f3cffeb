"""The nats-server processes of the tests: moved to ``tidings.cluster.natsproc`` (the
launcher of ``tidings cluster`` and the NATS benchmarks start the same ones); kept
here under its old name for tests that import it so."""

from typing import Any

from tidings.cluster.natsproc import NatsCluster, NatsServer, free_port, server_binary

__all__ = ["NatsCluster", "NatsServer", "free_port", "on_nats", "server_binary"]


def on_nats(hub: Any) -> bool:
    """Whether a ``hubproc.HubProcess`` runs on a NATS backend (``--backend nats://...``)."""
    return "--backend" in hub.extra
