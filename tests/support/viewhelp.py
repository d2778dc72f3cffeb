"""Commits as a stream processor writes them (streams design, section 3), for view tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DELETE = object()
"""A value in ``commit_events`` that deletes its key (a tombstone)."""


def commit_events(
    name: str,
    generation: int,
    seq: int,
    values: Mapping[str, Any],
    inputs: Mapping[str, Mapping[str, int]],
    state: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``v:`` records for ``values`` (``DELETE``: a tombstone), ``s:`` records for
    ``state``, then the checkpoint naming ``inputs`` (topic -> {"P": next offset})."""
    source = f"tidings/views/{name}"
    out: list[dict[str, Any]] = []
    for prefix, entries in (("v", values), ("s", state or {})):
        for key, value in entries.items():
            ev: dict[str, Any] = {
                "type": "tidings.view.value",
                "source": source,
                "id": f"{name}.{generation}.{seq}.{len(out)}",
                "partitionkey": f"{prefix}:{key}",
            }
            if value is not DELETE:
                ev["data"] = {"value": value}
            out.append(ev)
    out.append(
        {
            "type": "tidings.view.checkpoint",
            "source": source,
            "id": f"{name}.{generation}.{seq}.{len(out)}",
            "partitionkey": "c",
            "data": {
                "generation": generation,
                "seq": seq,
                "owner": "test",
                "inputs": {t: dict(p) for t, p in inputs.items()},
                "horizon": 0,
                "clock": {},
            },
        }
    )
    return out
