"""Fixtures of the client and App tests: one real hub per session (see ``sdkhub``)."""

from sdkhub import hub, hub_url, secured_hub_url, topic

__all__ = ["hub", "hub_url", "secured_hub_url", "topic"]
