"""The test harness of the App framework: ``TestHub`` (see :mod:`tidings.sdk.harness`)."""

from tidings.sdk.harness import TestHub, VirtualClock

__all__ = ["TestHub", "VirtualClock"]
