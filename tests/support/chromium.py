"""Headless Chromium for the browser tests: where it is, how it starts, when to skip.

The flags keep it off the network this machine does not have (background
networking, component updates, sync) and out of a sandbox it cannot make as root.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent: `apt-get install chromium` (make test does)",
)
