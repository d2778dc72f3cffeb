"""The test harness of the App framework: ``TestHub`` (see :mod:`tidings.app.harness`)."""

from tidings.app.harness import TestHub, VirtualClock

__all__ = ["TestHub", "VirtualClock"]
