"""The nats-server processes of the tests: moved to ``tidings.cluster.natsproc`` (the
launcher of ``tidings cluster`` and the NATS benchmarks start the same ones); kept
here under its old name for tests that import it so."""

from tidings.cluster.natsproc import NatsCluster, NatsServer, free_port, server_binary

__all__ = ["NatsCluster", "NatsServer", "free_port", "server_binary"]
