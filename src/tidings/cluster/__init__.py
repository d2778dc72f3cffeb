"""Local processes on loopback for trying and measuring the NATS backend.

``natsproc``: ``nats-server`` processes with JetStream, one or a routed cluster;
``launcher``: such a cluster with hub nodes on it (``tidings cluster``). Imports
no other package of tidings: it starts processes, it does not run a hub.
"""
