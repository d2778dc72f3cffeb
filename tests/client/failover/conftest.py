"""Fixtures of the failover tests: a real hub of their own (not the session's), and
URLs that reach it or nothing (see ``failoverhelp``)."""

from failoverhelp import down, hub, hubs, proxy

__all__ = ["down", "hub", "hubs", "proxy"]
