"""The protocol edges a client may lean on (issue 13, hole 9), against real hub processes.

- A 405 names in ``Allow`` every method its path takes (RFC 9110 section 15.5.6).
- The auth scheme is case-insensitive (RFC 9110 section 11.1): ``bearer``, ``BEARER``.
- A WebSocket text frame that is not UTF-8 is closed with 1007, a frame over the
  size limit with 1009 (RFC 6455 section 7.4.1), and neither leaves a traceback
  in the hub's log.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from hubapi import expect, expect_problem, unique
from hubproc import HubFactory, HubProcess

Session = aiohttp.ClientSession


def _allow(resp: aiohttp.ClientResponse) -> set[str]:
    return {m.strip() for m in resp.headers.get("allow", "").split(",") if m.strip()}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v1/topics/t", {"GET", "HEAD", "PUT", "DELETE"}),
        ("PATCH", "/v1/topics/t/events", {"GET", "HEAD", "POST"}),
        ("POST", "/v1/topics/t/groups/g", {"GET", "HEAD", "PUT", "DELETE"}),
        ("DELETE", "/v1/webhooks", {"GET", "HEAD", "POST"}),
        ("PUT", "/v1/webhooks/w1", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("GET", "/v1/topics/t/groups/g/fetch", {"POST"}),
    ],
)
async def test_a_405_allows_every_method_of_its_path(
    hub: HubProcess, http: Session, method: str, path: str, allowed: set[str]
) -> None:
    async with http.request(method, hub.base_url + path) as resp:
        await expect_problem(resp, 405)
        assert _allow(resp) == allowed


@pytest.fixture(scope="module")
def auth_hub(
    module_hub_factory: HubFactory, tmp_path_factory: pytest.TempPathFactory
) -> HubProcess:
    path: Path = tmp_path_factory.mktemp("edges-auth") / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"name": "ops", "token": "s3cret", "admin": True}]}))
    return module_hub_factory.start("--auth-file", str(path))


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_is_case_insensitive(
    auth_hub: HubProcess, http: Session, scheme: str
) -> None:
    headers = {"Authorization": f"{scheme} s3cret"}
    async with http.put(f"{auth_hub.base_url}/v1/topics/{unique()}", headers=headers) as resp:
        await expect(resp, 201)
    async with http.get(f"{auth_hub.base_url}/v1/topics", headers=headers) as resp:
        await expect(resp, 200)
