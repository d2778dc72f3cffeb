"""The hubs the handler tests run against, with the same test code: in memory under
a virtual clock (``TestHub()``), the embedded core on a data directory, a real
``tidings serve`` over HTTP."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

KINDS = ["memory", "embedded", "http"]


def hub_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if kind == "memory":
        return None
    if kind == "embedded":
        return f"embedded:{tmp_path / 'data'}"
    url: str = request.getfixturevalue("hub_url")
    return url


def suffix() -> str:
    return uuid.uuid4().hex[:10]
